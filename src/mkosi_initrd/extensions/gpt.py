"""A GPT disk image of given partitions (UEFI 2.x: protective MBR, primary and backup headers and
entry arrays, CRC32s), written in one pass; for DDIs where systemd-repart cannot make them."""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SECTOR = 512
ENTRIES = 128
ENTRY_SIZE = 128
ARRAY_SECTORS = ENTRIES * ENTRY_SIZE // SECTOR  # 32
FIRST_USABLE = 2 + ARRAY_SECTORS  # after the MBR, the header and the entry array
FIRST_LBA = 2048  # 1 MiB, as partitioning tools align


@dataclass(frozen=True)
class Partition:
    type_uuid: str
    uuid: str
    label: str
    source: Path  # its bytes; padded to whole sectors


def _sectors(n: int) -> int:
    return -(-n // SECTOR)


def _entry(p: Partition, first: int, last: int) -> bytes:
    label = p.label.encode("utf-16-le")[:72].ljust(72, b"\0")
    return (
        uuid.UUID(p.type_uuid).bytes_le + uuid.UUID(p.uuid).bytes_le
        + struct.pack("<QQQ", first, last, 0) + label
    )  # fmt: skip


def _header(disk: str, current: int, backup: int, last_usable: int, array_lba: int, crc: int) -> bytes:
    fields = struct.pack(
        "<8sIIIIQQQQ16sQIII", b"EFI PART", 0x00010000, 92, 0, 0, current, backup, FIRST_USABLE,
        last_usable, uuid.UUID(disk).bytes_le, array_lba, ENTRIES, ENTRY_SIZE, crc,
    )  # fmt: skip
    fields = fields[:16] + struct.pack("<I", zlib.crc32(fields)) + fields[20:]
    return fields.ljust(SECTOR, b"\0")


def _mbr(total: int) -> bytes:
    size = min(total - 1, 0xFFFFFFFF)
    part = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, size)
    return b"\0" * 446 + part + b"\0" * 48 + b"\x55\xaa"


def _copy(src: Path, out: BinaryIO, sectors: int) -> None:
    with open(src, "rb") as f:
        n = 0
        while chunk := f.read(1 << 20):
            out.write(chunk)
            n += len(chunk)
    out.write(b"\0" * (sectors * SECTOR - n))


def write_gpt(out: BinaryIO, disk_uuid: str, parts: Sequence[Partition]) -> None:
    spans, lba = [], FIRST_LBA
    for p in parts:
        n = _sectors(p.source.stat().st_size)
        n += -n % 8  # 4 KiB aligned: the file systems' and verity's block size
        spans.append((lba, lba + n - 1))
        lba += n
    last_usable = lba - 1
    total = lba + ARRAY_SECTORS + 1
    entries = b"".join(_entry(p, a, b) for p, (a, b) in zip(parts, spans, strict=True))
    array = entries.ljust(ENTRIES * ENTRY_SIZE, b"\0")
    crc = zlib.crc32(array)
    out.write(_mbr(total))
    out.write(_header(disk_uuid, 1, total - 1, last_usable, 2, crc))
    out.write(array)
    out.write(b"\0" * ((FIRST_LBA - 2 - ARRAY_SECTORS) * SECTOR))
    for p, (a, b) in zip(parts, spans, strict=True):
        _copy(p.source, out, b - a + 1)
    out.write(array)
    out.write(_header(disk_uuid, total - 1, 1, last_usable, total - 1 - ARRAY_SECTORS, crc))
