"""Module patterns with mkosi's semantics.

A pattern is matched against a module's path relative to /usr/lib/modules/KVER without its
`.ko[.xz|.zst|.gz]` suffix, e.g. `kernel/fs/ext4/ext4`:

- `ext4`, `raid[0-9]*`: the basename;
- `fs/nfs/nfs`: a path suffix starting at a component boundary;
- `/fs/ext4/ext4`: anchored at `kernel/` (or at the module directory itself);
- `crypto/`, `/fs/nls/`: a trailing `/` selects every module below that directory;
- `-PATTERN` excludes; the last pattern that matches a module decides;
- `_` and `-` are the same character (outside `[...]`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mkosi_initrd.kernel.index import normalize

_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Pattern:
    text: str  # as written, including a leading "-"
    source: str  # "listed", "profile nfs", "config" ...
    include: bool
    regex: re.Pattern[str]
    literal: str  # the normalized basename for plain names (fast path), else ""

    @property
    def reason(self) -> str:
        return f"{self.source}: {self.text}"


def _glob_to_regex(glob: str) -> str:
    """fnmatch-style, but `*` and `?` never cross a `/`."""
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = glob.find("]", i + 2 if glob[i + 1 : i + 2] in ("!", "]") else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_pattern(text: str, source: str) -> Pattern:
    include = not text.startswith("-")
    body = text if include else text[1:]
    anchored = body.startswith("/")
    directory = body.endswith("/")
    core = normalize(body.strip("/"))
    prefix = r"^(?:kernel/)?" if anchored else r"(?:^|/)"
    suffix = "/" if directory else "$"
    regex = re.compile(prefix + _glob_to_regex(core) + suffix)
    literal = core if not (anchored or directory or "/" in core or _GLOB.search(core)) else ""
    return Pattern(text=text, source=source, include=include, regex=regex, literal=literal)


def module_key(relpath_stem: str) -> str:
    """What patterns see: the normalized path without the module suffix."""
    return normalize(relpath_stem)


class PatternSet:
    """Ordered patterns; `decide()` gives the last one matching a module, if any."""

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns = list(patterns)
        self._literal: dict[str, int] = {}
        self._globs: list[tuple[int, Pattern]] = []
        for i, p in enumerate(self.patterns):
            if p.literal:
                self._literal[p.literal] = i
            else:
                self._globs.append((i, p))
        self._globs.reverse()

    def decide(self, key: str) -> Pattern | None:
        """`key` is module_key(path); the basename is its last component."""
        best = self._literal.get(key.rsplit("/", 1)[-1], -1)
        for i, p in self._globs:
            if i <= best:
                break
            if p.regex.search(key):
                best = i
                break
        return self.patterns[best] if best >= 0 else None


def matches(pattern: Pattern, key: str) -> bool:
    if pattern.literal:
        return key.rsplit("/", 1)[-1] == pattern.literal
    return pattern.regex.search(key) is not None
