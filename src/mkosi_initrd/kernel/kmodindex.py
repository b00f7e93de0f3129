"""libkmod's binary index format (modules.dep.bin, modules.alias.bin, ...), written as depmod writes it.

    index_bin([(key, value, priority), ...], preorder) -> bytes  # entries in depmod's insertion order

The file is a trie (libkmod-index.c documents it): a 12-byte header (magic 0xB007F457, version 2.1,
offset of the root node), then the nodes: depmod of kmod 34 and later writes them in pre-order (the
root at offset 12), older ones in post-order (children first, the root last). A node is its prefix
(NUL-terminated, when not empty), its children (first and last character, then one big-endian
offset per character in between, 0 where there is no child) and its values (count, then priority
and NUL-terminated string each). An offset carries flags in its high nibble: prefix, values,
children. depmod's trie is canonical: the root has no prefix, any other node's prefix is the
longest common prefix of the key suffixes below it, so it is built here from the sorted keys.
Values of one key are sorted by priority; depmod puts a value before the ones of equal priority
inserted earlier, kept here.

Also depmod's alias normalization and the hash that orders modules.symbols (kmod's shared/).
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable

MAGIC = 0xB007F457
VERSION = 0x00020001
_PREFIX, _VALUES, _CHILDREN = 0x80000000, 0x40000000, 0x20000000
_U32 = struct.Struct(">I")


Values = dict[bytes, list[tuple[int, bytes]]]


def index_bin(entries: Iterable[tuple[str, str, int]], preorder: bool) -> bytes:
    """The index depmod writes after inserting `entries` (key, value, priority) in this order."""
    values: Values = {}
    for key, value, priority in entries:
        vals = values.setdefault(key.encode(), [])
        i = 0
        while i < len(vals) and vals[i][0] < priority:
            i += 1
        vals.insert(i, (priority, value.encode()))
    keys = sorted(values)
    out = bytearray(12)
    if not keys:
        root = _empty_root(out)
    else:
        # The root never has a prefix (depmod starts it empty and never splits it).
        root = (_pre if preorder else _post)(keys, 0, len(keys), 0, 0, values, out)
    out[:12] = _U32.pack(MAGIC) + _U32.pack(VERSION) + _U32.pack(root)
    return bytes(out)


def _empty_root(out: bytearray) -> int:
    return len(out)  # a node with nothing: no bytes, no flags


def _groups(keys: list[bytes], lo: int, hi: int, end: int) -> list[tuple[int, int, int, int]]:
    """keys[lo:hi] (sorted, sharing keys[lo][:end], none ending there) by the character at `end`:
    (character, lo, hi, where the group's common prefix ends)."""
    out = []
    stem = keys[lo][:end]
    while lo < hi:
        ch = keys[lo][end]
        j = bisect_left(keys, stem + bytes((ch + 1,)), lo, hi) if ch < 255 else hi
        out.append((ch, lo, j, _common(keys[lo], keys[j - 1], end + 1)))
        lo = j
    return out


def _common(first: bytes, last: bytes, pos: int) -> int:
    """Where the common prefix of a sorted range (that of its first and last key) ends, from `pos`."""
    limit = min(len(first), len(last))
    while pos < limit and first[pos] == last[pos]:
        pos += 1
    return pos


def _head(
    keys: list[bytes], lo: int, hi: int, pos: int, end: int, values: Values
) -> tuple[bytes, list[tuple[int, bytes]], list[tuple[int, int, int, int]], int]:
    """A node's prefix, values, children groups and flags."""
    prefix = keys[lo][pos:end]
    own: list[tuple[int, bytes]] = []
    if len(keys[lo]) == end:  # sorted: the key that ends at this node comes first
        own = values[keys[lo]]
        lo += 1
    groups = _groups(keys, lo, hi, end) if lo < hi else []
    mask = (_PREFIX if prefix else 0) | (_VALUES if own else 0) | (_CHILDREN if groups else 0)
    return prefix, own, groups, mask


def _put(out: bytearray, prefix: bytes, own: list[tuple[int, bytes]], offsets: list[int]) -> None:
    if prefix:
        out += prefix + b"\0"
    if offsets:
        out += struct.pack(f">{len(offsets)}I", *offsets)
    if own:
        out += _U32.pack(len(own))
        for priority, value in own:
            out += _U32.pack(priority) + value + b"\0"


def _pre(keys: list[bytes], lo: int, hi: int, pos: int, end: int, values: Values, out: bytearray) -> int:
    """Pre-order (depmod of kmod >= 34): the node, then its children in character order, whose
    offsets are filled in once they are written. Returns the node's offset with its flags."""
    prefix, own, groups, mask = _head(keys, lo, hi, pos, end, values)
    offset = len(out)
    if prefix:
        out += prefix + b"\0"
    table = 0
    if groups:
        first, last = groups[0][0], groups[-1][0]
        out += bytes((first, last))
        table = len(out)
        out += bytes(4 * (last - first + 1))
    _put(out, b"", own, [])
    for ch, a, b, e in groups:
        _U32.pack_into(out, table + 4 * (ch - groups[0][0]), _pre(keys, a, b, end + 1, e, values, out))
    return offset | mask


def _post(keys: list[bytes], lo: int, hi: int, pos: int, end: int, values: Values, out: bytearray) -> int:
    """Post-order (kmod < 34): the children first, in character order, then the node."""
    prefix, own, groups, mask = _head(keys, lo, hi, pos, end, values)
    offsets: list[int] = []
    if groups:
        first, last = groups[0][0], groups[-1][0]
        offsets = [0] * (last - first + 1)
        for ch, a, b, e in groups:
            offsets[ch - first] = _post(keys, a, b, end + 1, e, values, out)
    offset = len(out)
    if prefix:
        out += prefix + b"\0"
    if groups:
        out += bytes((groups[0][0], groups[-1][0]))
    _put(out, b"", own, offsets)
    return offset | mask


def alias_normalize(alias: str) -> str | None:
    """kmod's alias_normalize: `-` → `_` outside `[...]`; None where a bracket is unmatched."""
    if "[" not in alias and "]" not in alias:
        return alias.replace("-", "_")
    out = []
    i, n = 0, len(alias)
    while i < n:
        c = alias[i]
        if c == "-":
            out.append("_")
        elif c == "]":
            return None
        elif c == "[":
            j = alias.find("]", i)
            if j < 0:
                return None
            out.append(alias[i : j + 1])
            i = j
        else:
            out.append(c)
        i += 1
    return "".join(out)


def hash_superfast(key: bytes) -> int:
    """kmod's hash_superfast (Paul Hsieh's), 32-bit, little-endian 16-bit reads as on x86."""
    m = 0xFFFFFFFF
    n = len(key)
    h = n
    rem = n & 3
    i = 0
    for _ in range(n // 4):
        h = (h + (key[i] | key[i + 1] << 8)) & m
        tmp = (((key[i + 2] | key[i + 3] << 8) << 11) ^ h) & m
        h = ((h << 16) ^ tmp) & m
        i += 4
        h = (h + (h >> 11)) & m
    if rem == 3:
        h = (h + (key[i] | key[i + 1] << 8)) & m
        h ^= (h << 16) & m
        h ^= (_signed(key[i + 2]) << 18) & m
        h = (h + (h >> 11)) & m
    elif rem == 2:
        h = (h + (key[i] | key[i + 1] << 8)) & m
        h ^= (h << 11) & m
        h = (h + (h >> 17)) & m
    elif rem == 1:
        h = (h + _signed(key[i])) & m
        h ^= (h << 10) & m
        h = (h + (h >> 1)) & m
    h ^= (h << 3) & m
    h = (h + (h >> 5)) & m
    h ^= (h << 4) & m
    h = (h + (h >> 17)) & m
    h ^= (h << 25) & m
    h = (h + (h >> 6)) & m
    return h


def _signed(b: int) -> int:
    """A C `char` (signed on x86) as depmod's hash reads single bytes."""
    return b - 256 if b >= 128 else b
