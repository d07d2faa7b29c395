"""Container readers: bytes of an image file in, ``MetadataText`` pieces out.

Each reader walks its container's structure itself (never trusting PIL's ``info``,
which stops at the first IDAT) and survives truncated or lying lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from audit.meta.base import MetadataText


@dataclass
class ContainerReport:
    """What a container reader found: text pieces, problems, and whether pixels could
    hide "stealth" metadata (an alpha channel, or lossless RGB)."""

    format: str | None = None
    pieces: list[MetadataText] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    has_alpha: bool = False
    lossless: bool = False


def read_container(data: bytes) -> ContainerReport:
    """Dispatch on the file's magic bytes."""
    from audit.meta.containers import isobmff, jpeg, png, webp

    if data.startswith(png.SIGNATURE):
        return png.read(data)
    if data.startswith(b"\xff\xd8"):
        return jpeg.read(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return webp.read(data)
    if isobmff.is_isobmff_image(data):
        return isobmff.read(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):  # a TIFF file is itself the IFD structure EXIF borrows
        from audit.meta.containers import exif

        report = ContainerReport(format="TIFF")
        report.pieces.extend(exif.read_tiff(data, "tiff", report.errors))
        return report
    return ContainerReport()
