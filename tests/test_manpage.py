"""mkosi-initrd(1) is generated from docs/mkosi-initrd.1.md and the CLI parser: it must match --help."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mkosi_initrd import cli

REPO = Path(__file__).resolve().parent.parent
OPTION = re.compile(r"(?<![\w/-])--?[A-Za-z][\w-]*")
COMMANDS = ("build", "plan", "inspect", "addon", "sysext")


@pytest.fixture(scope="module")
def manpage(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("man") / "mkosi-initrd.1"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run(
        [sys.executable, REPO / "tools/mkman.py", REPO / "docs/mkosi-initrd.1.md", "-o", out],
        env=env,
        check=True,
    )
    return out.read_text()


def plain(roff: str) -> str:
    """Roff → the text a reader sees (enough for option names: fonts dropped, \\- → -)."""
    return re.sub(r"\\f[BIRP]", "", roff).replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")


def section(roff: str, macro: str, title: str) -> str:
    """Body of `.SH TITLE` or `.SS TITLE` up to the next heading."""
    m = re.search(rf"^\{macro} {re.escape(title)}\n(.*?)(?=^\.S[HS] |\Z)", roff, re.M | re.S)
    assert m, f"no {macro} {title} in the man page"
    return plain(m.group(1))


def help_text(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: textwrap may split an option at its hyphens
    with pytest.raises(SystemExit):
        cli.parse_args([*argv, "--help"])
    return capsys.readouterr().out


def all_options() -> set[str]:
    parser = cli._parser()
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                actions += sub._actions
    return {opt for a in actions for opt in a.option_strings}


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_section_lists_exactly_the_options_of_its_help(
    command: str, manpage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    in_help = set(OPTION.findall(help_text([command], monkeypatch, capsys)))
    in_page = set(OPTION.findall(section(manpage, ".SS", command)))
    assert in_help, "found no options in --help: the pattern is wrong"
    assert in_page == in_help


def test_top_level_options_section_matches_top_level_help(
    manpage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    in_help = {
        o for o in OPTION.findall(help_text([], monkeypatch, capsys)) if o in ("-h", "--help", "--version")
    }
    assert (
        set(OPTION.findall(section(manpage, ".SH", "OPTIONS"))) == in_help == {"-h", "--help", "--version"}
    )


def test_every_long_option_the_page_mentions_exists(manpage: str) -> None:
    known = all_options()
    mentioned = {o for o in OPTION.findall(plain(manpage)) if o.startswith("--")}
    assert mentioned - known == set()


def test_page_renders_without_groff_warnings(manpage: str, tmp_path: Path) -> None:
    if not shutil.which("groff"):
        pytest.skip("groff is not installed (tools/setup.sh installs groff-base)")
    page = tmp_path / "mkosi-initrd.1"
    page.write_text(manpage)
    r = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", page], capture_output=True, text=True, check=True
    )
    assert r.stderr == ""
