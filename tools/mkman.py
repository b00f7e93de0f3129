#!/usr/bin/env python3
"""mkosi-initrd(1) from its one source: docs/mkosi-initrd.1.md plus the argparse parser in cli.py.

    PYTHONPATH=src python3 tools/mkman.py docs/mkosi-initrd.1.md -o mkosi-initrd.1

The markdown is a small subset: `# title(1)`, `## SECTION`, `### subsection`, paragraphs, `- ` list
items, indented (4 spaces) literal blocks, a `term` line followed by `: definition` lines, and
inline `code`, **bold** and *italic*. A line `<!-- options: COMMAND -->` is replaced by that
command's options as the parser defines them (`<!-- options: -->` for the top-level ones), so the
page cannot drift from `--help`; a line `<!-- settings -->` by the ini files' settings, from the same
table (src/mkosi_initrd/config/settings.py). `--readme-table` prints README's table of them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, too

from mkosi_initrd.config.settings import Setting, in_files  # noqa: E402

OPTIONS_DIRECTIVE = re.compile(r"^<!--\s*options:\s*(\S*)\s*-->$")
SETTINGS_DIRECTIVE = "<!-- settings -->"
HIDDEN_GROUPS = ("positional arguments", "options", "optional arguments")


def escape(text: str) -> str:
    """Plain text → roff: backslashes, hyphens (as \\- so options copy-paste), leading dots."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def inline(text: str) -> str:
    """Inline markdown (`code`, **bold**, *italic*) → roff fonts."""
    out = []
    pos = 0
    for m in re.finditer(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*]+)\*", text):
        out.append(escape(text[pos : m.start()]))
        code, bold, italic = m.groups()
        font = "I" if italic is not None else "B"
        out.append(f"\\f{font}{escape(code or bold or italic)}\\fR")
        pos = m.end()
    out.append(escape(text[pos:]))
    # escape() guards every piece against a leading dot; mid-line the guard (\\&) prints nothing.
    return "".join(out)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    if not command:
        return parser
    commands = subparsers(parser)
    if command not in commands:
        raise SystemExit(f"mkman: no command {command!r} in the parser (have: {', '.join(commands)})")
    return commands[command]


def invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """`-k, --kernel-version KVER` in roff, with the value written as argparse writes it."""
    fmt = parser._get_formatter()
    if not action.option_strings:
        return f"\\fI{escape(fmt._format_args(action, action.dest))}\\fR"
    value = ""
    if action.nargs != 0:
        value = " \\fI" + escape(fmt._format_args(action, action.dest.upper())) + "\\fR"
    return ", ".join(f"\\fB{escape(opt)}\\fR{value}" for opt in action.option_strings)


def options_roff(parser: argparse.ArgumentParser) -> Iterator[str]:
    fmt = parser._get_formatter()
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)
        ]
        if not actions:
            continue
        if group.title not in HIDDEN_GROUPS:
            yield f".PP\n\\fI{escape(group.title or '')}\\fR"
        for action in actions:
            yield f".TP\n{invocation(parser, action)}"
            yield escape(fmt._expand_help(action)) if action.help else ".br"


def long_flag(s: Setting) -> str:
    return next((f for f in reversed(s.flags) if f.startswith("--")), "")


def settings_markdown() -> list[str]:
    """The ini settings as `term` / `: definition` lines, with the command-line flag of each."""
    out = []
    for s in in_files().values():
        flag = f" (`{long_flag(s)}`)" if long_flag(s) else ""
        out += [f"`{s.ini}`", f": {s.doc[0].upper()}{s.doc[1:]}{flag}.", ""]
    return out


def readme_table() -> list[str]:
    """README's configuration reference: one row per ini setting."""
    out = ["| section | setting | value | command line |", "|---|---|---|---|"]
    for s in in_files().values():
        flag = f" `{long_flag(s)}` " if long_flag(s) else " "
        out.append(f"| `[{s.section}]` | `{s.key}=` | {s.doc} |{flag}|")
    return out


def convert(markdown: str, parser: argparse.ArgumentParser, version: str) -> str:
    lines = []
    for line in markdown.splitlines():
        lines += settings_markdown() if line.strip() == SETTINGS_DIRECTIVE else [line]
    out: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(inline(" ".join(para)))
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        directive = OPTIONS_DIRECTIVE.match(line.strip())
        if line.startswith("# "):
            flush()
            title, section = re.fullmatch(r"# (\S+)\((\d)\)", line.strip()).groups()  # type: ignore[union-attr]
            out.append(f'.TH {title.upper()} {section} "" "{title} {version}" "User Commands"')
        elif line.startswith("## "):
            flush()
            out.append(f".SH {escape(line[3:].strip().upper())}")
        elif line.startswith("### "):
            flush()
            out.append(f".SS {inline(line[4:].strip())}")
        elif directive:
            flush()
            out.extend(options_roff(command_parser(parser, directive.group(1))))
        elif line.startswith("    "):
            flush()
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out.append(".PP\n.RS 4\n.nf")
            out.extend(escape(b) for b in block)
            out.append(".fi\n.RE")
            out.append(".PP")
            continue
        elif line.startswith("- "):
            flush()
            out.append(".IP \\(bu 2")
            para.append(line[2:].strip())
        elif i + 1 < len(lines) and lines[i + 1].startswith(": "):
            flush()
            out.append(f".TP\n{inline(line.strip())}")
        elif line.startswith(": "):
            para.append(line[2:].strip())
        elif not line.strip():
            flush()
            if out and not out[-1].startswith((".SH", ".SS", ".TP", ".PP")):
                out.append(".PP")
        else:
            para.append(line.strip())
        i += 1
    flush()
    return "\n".join(drop_empty_paragraphs(out)) + "\n"


def drop_empty_paragraphs(lines: list[str]) -> list[str]:
    """A .PP right before another block macro (or at either end) would only add blank lines."""
    kept: list[str] = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ".SH"
        if line == ".PP" and (
            nxt.startswith((".SH", ".SS", ".TP", ".PP", ".IP")) or lines[i - 1].startswith(".TH")
        ):
            continue
        kept.append(line)
    return kept


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("source", type=Path, nargs="?")
    ap.add_argument("-o", "--output", type=Path, help="default: stdout")
    ap.add_argument("--readme-table", action="store_true", help="print README's table of the settings")
    args = ap.parse_args(argv)
    if args.readme_table:
        print("\n".join(readme_table()))
        return 0
    if args.source is None:
        ap.error("the markdown source is needed")

    from mkosi_initrd import __version__, cli

    page = convert(args.source.read_text(), cli._parser(), __version__)
    if args.output:
        args.output.write_text(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
