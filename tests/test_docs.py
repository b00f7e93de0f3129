"""The configuration references (README, man page, the example file) are the settings table's."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from mkosi_initrd import cli
from mkosi_initrd.config.settings import in_files

REPO = Path(__file__).resolve().parent.parent


def mkman() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mkman", REPO / "tools/mkman.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_configuration_reference_is_the_settings_table() -> None:
    text = (REPO / "README.md").read_text()
    reference = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in reference.splitlines() if line.startswith("|")]
    assert len(rows) > 5
    assert rows == mkman().readme_table(), "regenerate it: tools/mkman.py --readme-table"


def test_man_page_configuration_section_lists_every_setting_and_no_other() -> None:
    page = mkman().convert((REPO / "docs/mkosi-initrd.1.md").read_text(), cli._parser(), "0")
    section = page.split(".SH CONFIGURATION", 1)[1].split("\n.SH ", 1)[0]
    listed = re.findall(r"^\\fB\[(\w+)\] (\w+)=\\fR$", section, re.M)
    assert listed == list(in_files()) and len(listed) > 5


def test_the_example_configuration_shows_every_setting_in_its_section() -> None:
    section, shown = "", []
    for line in (REPO / "mkosi-initrd.conf.example").read_text().splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.fullmatch(r"#(\w+)=.*", line):
            shown.append((section, m.group(1)))
    assert sorted(shown) == sorted(in_files())
