"""The configuration references (README, man page source) name exactly the settings config.py reads."""

from __future__ import annotations

import re
from pathlib import Path

from mkosi_initrd.config import load as config

REPO = Path(__file__).resolve().parent.parent


def readme_settings() -> set[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    reference = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `\[(\w+)\]` \| `(\w+)=` \|", reference, re.M))


def test_readme_configuration_reference_lists_every_setting_and_no_other() -> None:
    known = set(config._LISTS) | set(config._SCALARS)
    assert len(known) > 5
    assert readme_settings() == known


def test_man_page_configuration_section_lists_every_setting_and_no_other() -> None:
    text = (REPO / "docs/mkosi-initrd.1.md").read_text()
    section = text.split("## CONFIGURATION", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^`\[(\w+)\] (\w+)=`$", section, re.M))
    assert listed == set(config._LISTS) | set(config._SCALARS)
