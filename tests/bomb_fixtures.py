"""Zip and tar.gz bombs for memory tests, built in well under a second: the deflate stream of
one member's zeros is made once and reused for every member (as real bombs are made)."""

from __future__ import annotations

import struct
import tarfile
import zlib
from pathlib import Path

_DOS_DATE = 0x5821  # 2024-01-01


def _zeros_deflate(size: int) -> bytes:
    """Raw deflate of ``size`` zero bytes (a multiple of 1 MiB), ending byte-aligned after a
    full flush: it can be followed by any other deflate blocks, or used again."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1 << 20)
    parts = [c.compress(block) for _ in range(size >> 20)]
    parts.append(c.flush(zlib.Z_FULL_FLUSH))
    return b"".join(parts)


def zip_bomb(path: Path, members: int, size: int) -> None:
    """A zip of ``members`` deflated members ``bomb/NNNN.png`` of ``size`` zero bytes each."""
    body = _zeros_deflate(size) + b"\x03\x00"  # an empty final block ends each member's stream
    crc = zlib.crc32(bytes(size))
    local, central = [], []
    offset = 0
    for i in range(members):
        name = f"bomb/{i:04d}.png".encode()
        head = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, _DOS_DATE, crc, len(body), size, len(name), 0)
        central.append(
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                0,
                8,
                0,
                _DOS_DATE,
                crc,
                len(body),
                size,
                len(name),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + name
        )
        local.append(head + name + body)
        offset += len(head) + len(name) + len(body)
    directory = b"".join(central)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, members, members, len(directory), offset, 0)
    with open(path, "wb") as fh:
        fh.writelines(local)
        fh.write(directory + end)


def tar_gz_bomb(path: Path, members: int, size: int) -> None:
    """A tar.gz (one gzip stream, as ``tar czf`` writes) of ``members`` members
    ``bomb/NNNN.png`` of ``size`` zero bytes each."""
    zeros_deflated = _zeros_deflate(size)
    zeros = bytes(size)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = total = 0
    out = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"]
    for i in range(members):
        info = tarfile.TarInfo(f"bomb/{i:04d}.png")
        info.size = size
        head = info.tobuf(format=tarfile.GNU_FORMAT)
        out.append(c.compress(head) + c.flush(zlib.Z_FULL_FLUSH))
        out.append(zeros_deflated)  # the compressor's state after a full flush is fresh: valid here
        crc = zlib.crc32(zeros, zlib.crc32(head, crc))
        total += len(head) + size
    tail = bytes(tarfile.RECORDSIZE)  # end-of-archive blocks
    out.append(c.compress(tail) + c.flush(zlib.Z_FINISH))
    crc = zlib.crc32(tail, crc)
    total += len(tail)
    out.append(struct.pack("<II", crc, total & 0xFFFFFFFF))
    with open(path, "wb") as fh:
        fh.writelines(out)
