"""Debian version comparison, as dpkg does it (deb-version(7)).

A version is `[epoch:]upstream[-revision]`. Each part is compared as alternating runs of
non-digits (compared char by char, letters before non-letters, `~` before everything, even the
end) and digits (compared as numbers).
"""

from __future__ import annotations

import functools


def split(version: str) -> tuple[int, str, str]:
    """`[epoch:]upstream[-revision]` → (epoch, upstream, revision)."""
    epoch = 0
    if ":" in version:
        e, version = version.split(":", 1)
        epoch = int(e) if e.isdigit() else 0
    upstream, sep, revision = version.rpartition("-")
    if not sep:
        return epoch, version, ""
    return epoch, upstream, revision


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


@functools.lru_cache(maxsize=8192)
def _cmp_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        # Non-digit run: compare character by character; the end of a string sorts between `~` and all else.
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        ni = i
        while ni < len(a) and a[ni].isdigit():
            ni += 1
        nj = j
        while nj < len(b) and b[nj].isdigit():
            nj += 1
        an = int(a[i:ni] or 0)
        bn = int(b[j:nj] or 0)
        if an != bn:
            return -1 if an < bn else 1
        i, j = ni, nj
    return 0


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian orders versions `a` and `b`."""
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _cmp_part(ua, ub) or _cmp_part(ra, rb)


def satisfies(version: str, op: str, wanted: str) -> bool:
    """Does `version` satisfy `op wanted`? `op` is one of "", "<", "<=", "=", ">=", ">"."""
    if not op:
        return True
    c = compare(version, wanted)
    return {"<": c < 0, "<=": c <= 0, "=": c == 0, ">=": c >= 0, ">": c > 0}[op]
