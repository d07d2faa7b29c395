"""Report-time checks of the original files, and the thumbnails of viewable items.

For every item in a finding the original bytes are read again (first present location
first): a read that works and hashes to ``item_id`` marks the item verified; one that
hashes to something else marks it changed (and shows no thumbnail: those pixels are not
the evidence); when no location can be read the item is missing.

Thumbnails (viewable items only; a ``no_view`` item is hashed, never decoded) are at most
``THUMB_PX`` on their long side and exist in two versions, both blurred server-side so the
pixels themselves, not a CSS filter, protect the reviewer:

- ``cover``: heavily blurred (radius ≈ a sixth of the thumbnail), what the page shows;
- ``reveal``: what one deliberate click shows: lightly blurred by default (shapes, colours
  and layout are judgeable, fine detail is not), the plain thumbnail with ``blur=False``.

``grayscale=True`` makes both grey. Originals are never copied into a report.
"""

from __future__ import annotations

import io
from typing import Callable

from audit.hashing import verify_item
from audit.imaging import DecodeError, decode_image
from audit.report.data import Item, ReportData, Thumb

THUMB_PX = 96
COVER_RADIUS = THUMB_PX / 6
REVEAL_RADIUS = 1.6
MAX_PIXELS = 64_000_000


def check_and_thumbnail(
    data: ReportData,
    *,
    blur: bool = True,
    grayscale: bool = False,
    thumbnails: bool = True,
    thumb_items: set[str] | None = None,
    reader: Callable[[str], bytes] | None = None,
    progress=None,
) -> None:
    """Check every item's original; thumbnail the viewable ones (only ``thumb_items`` if given)."""
    if reader is None:
        from audit.ingest.reader import read_uri as reader
    for item in data.items.values():
        want = thumbnails and (thumb_items is None or item.item_id in thumb_items)
        _check(item, reader, blur=blur, grayscale=grayscale, thumbnails=want)
        if progress:
            progress("done", 1)


def check_stream(
    data: ReportData,
    *,
    blur: bool = True,
    grayscale: bool = False,
    thumbnails: bool = True,
    reader: Callable[[str], bytes] | None = None,
    progress=None,
) -> None:
    """``check_and_thumbnail`` for a streamed report (``gather_stream``): the shown items
    first (with thumbnails), then every other item in a finding, batch by batch, each
    checked once; the counts of every finding are taken on the way (``data.totals``)."""
    from audit.report.data import Tally

    if reader is None:
        from audit.ingest.reader import read_uri as reader
    source = data.source
    assert source is not None
    for item in data.items.values():
        _check(item, reader, blur=blur, grayscale=grayscale, thumbnails=thumbnails)
        source.keep_check(item)
        if progress:
            progress("done", 1)
    tally = Tally()
    for findings, items in source.batches():
        for item in items.values():
            if not item.checked:
                _check(item, reader, blur=blur, grayscale=grayscale, thumbnails=False)
                source.keep_check(item)
                if progress:
                    progress("done", 1)
        for f in findings:
            tally.add(f, items[f.item_id])
    data.totals = tally.result(source.count_clusters())
    data.category_stats = tally.per_cat


def _check(item: Item, reader, *, blur: bool, grayscale: bool, thumbnails: bool = True) -> None:
    item.checked = True
    item.present = False
    errors = []
    for loc in sorted(item.locations, key=lambda location: not location["present"]):
        uri = loc["uri"]
        if not uri:
            continue
        try:
            raw = reader(uri)
        except Exception as exc:  # noqa: BLE001 - ReadError and anything a reader raises
            errors.append(f"{uri}: {str(exc) or type(exc).__name__}")
            continue
        item.present = True
        item.read_uri = uri
        item.verified = verify_item(raw, item.item_id)
        if not item.verified:
            item.read_error = f"{uri}: content differs from the catalogued SHA-256 (changed since the crawl)"
            continue  # maybe another location still holds the original
        item.read_error = None
        if thumbnails and not item.no_view:
            try:
                item.thumb = make_thumb(raw, blur=blur, grayscale=grayscale)
            except DecodeError as exc:  # undecodable image: report it, no thumbnail
                item.read_error = f"thumbnail: {str(exc)[:200]}"
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory while resizing
                item.read_error = f"thumbnail: {type(exc).__name__}: {str(exc)[:160]}"
        return
    if not item.present:
        item.read_error = "; ".join(errors)[:500] or "no location recorded"


def make_thumb(raw: bytes, *, blur: bool = True, grayscale: bool = False, px: int = THUMB_PX) -> Thumb:
    """The blurred thumbnails of ``raw``; ``DecodeError`` (a ``ValueError``) when it has no
    pixels to show. Decoded as every stage decodes (``decode_image``), so a file the crawl
    hashed despite broken metadata or a cut-short end gets a thumbnail too."""
    from PIL import Image, ImageFilter, ImageOps

    decoded = decode_image(raw, max_pixels=MAX_PIXELS, draft=(px * 2, px * 2), orientation=True)
    img = decoded.oriented(
        decoded.rgb(background=(128, 128, 128))
    )  # grey: transparency must not hide content from the blur
    img.thumbnail((px, px), Image.LANCZOS)
    if grayscale:
        img = ImageOps.grayscale(img).convert("RGB")
    radius = max(COVER_RADIUS * max(img.size) / px, 4)
    cover = img.resize((max(1, img.width // 8), max(1, img.height // 8)), Image.BILINEAR).resize(
        img.size, Image.BILINEAR
    )
    cover = cover.filter(ImageFilter.GaussianBlur(radius))
    reveal = img.filter(ImageFilter.GaussianBlur(REVEAL_RADIUS)) if blur else img
    return Thumb(cover=_jpeg(cover), reveal=_jpeg(reveal), width=img.width, height=img.height)


def _jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80, optimize=True)
    return buf.getvalue()
