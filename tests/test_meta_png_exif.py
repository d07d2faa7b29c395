"""EXIF inside PNG: the ``eXIf`` chunk (PNG 1.5; what Pillow writes for ``save(..., exif=)``,
with or without the "Exif\\0\\0" header some writers keep) and the older ``Raw profile type
exif`` / ``Raw profile type APP1`` text chunks of ImageMagick and exiftool (name, decimal
length, hex dump). Either byte order, UserComment in UTF-16 of either endianness with or
without a BOM, ASCII; infotext written only there (Civitai's on-site generator). Bad
variants: truncated chunk, offsets outside the block, damaged hex, a wrong declared length."""

from __future__ import annotations

import io
import json
import zlib

import pytest
from PIL import Image, ImageDraw
from tests.meta_fixtures import png_chunk, png_with_chunks, tiff

from audit.meta import extract

PROMPT = "a green star on a gray background"
CIVITAI_RESOURCES = [
    {"type": "checkpoint", "modelVersionId": 1234, "modelName": "Toy Shapes", "modelVersionName": "v1"}
]
INFOTEXT = (
    f"{PROMPT}\nNegative prompt: a purple circle\nSteps: 25, Sampler: DPM++ 2M, Schedule type: Karras, "
    f"CFG scale: 7, Seed: 3141592653, Size: 32x32, Clip skip: 2, "
    f"Civitai resources: {json.dumps(CIVITAI_RESOURCES, separators=(',', ':'))}, Civitai metadata: {{}}"
)


def comment_exif(comment: bytes, big_endian: bool) -> bytes:
    return tiff([], big_endian=big_endian, exif_entries=[(0x9286, 7, comment)])


def toy_png_with_pillow_exif(exif: bytes) -> bytes:
    image = Image.new("RGB", (32, 32), "gray")
    ImageDraw.Draw(image).regular_polygon((16, 16, 12), 5, fill="green")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif)
    return buffer.getvalue()


def assert_civitai_infotext(result) -> None:
    meta = result.best
    assert meta.prompt == PROMPT and meta.negative_prompt == "a purple circle"
    assert (meta.seed, meta.steps, meta.cfg_scale, meta.sampler) == ("3141592653", 25, 7.0, "DPM++ 2M")


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le", "utf-16"])  # "utf-16": with a BOM
def test_exif_chunk_user_comment_unicode_any_order(big_endian, encoding):
    data = toy_png_with_pillow_exif(comment_exif(b"UNICODE\x00" + INFOTEXT.encode(encoding), big_endian))
    assert b"eXIf" in data
    result = extract(data)
    assert_civitai_infotext(result)
    assert result.found == ["civitai@png:eXIf:UserComment"]  # infotext with "Civitai resources"
    assert not result.errors


def test_exif_chunk_ascii_comment_and_exif_header_kept():
    exif = b"Exif\x00\x00" + comment_exif(b"ASCII\x00\x00\x00" + INFOTEXT.encode(), big_endian=True)
    data = png_with_chunks(before=[png_chunk(b"eXIf", exif)])  # a writer that kept the JPEG header
    assert_civitai_infotext(extract(data))


def test_exif_chunk_user_comment_all_cjk_without_bom():
    # nothing ASCII to tell the byte order by: the plausible reading wins, either order
    prompt = "赤い三角形、白い背景"
    for encoding in ("utf-16-be", "utf-16-le"):
        for big_endian in (False, True):
            data = toy_png_with_pillow_exif(comment_exif(b"UNICODE\x00" + prompt.encode(encoding), big_endian))
            pieces = {p.location: p.text for p in extract(data).raw}
            assert pieces["png:eXIf:UserComment"] == prompt, (encoding, big_endian)


def raw_profile(payload: bytes, name: str = "exif", declared: int | None = None) -> str:
    """ImageMagick's layout (coders/png.c): "\\n<name>\\n<length, width 8>\\n" then 72 hex digits a line."""
    digits = payload.hex()
    lines = "\n".join(digits[i : i + 72] for i in range(0, len(digits), 72))
    return f"\n{name}\n{declared if declared is not None else len(payload):8d}\n{lines}\n"


@pytest.mark.parametrize("big_endian", [False, True])
def test_raw_profile_type_exif_ztxt_from_imagemagick(big_endian):
    exif = b"Exif\x00\x00" + comment_exif(b"UNICODE\x00" + INFOTEXT.encode("utf-16-be"), big_endian)
    body = b"Raw profile type exif\x00\x00" + zlib.compress(raw_profile(exif).encode("ascii"))
    result = extract(png_with_chunks(before=[png_chunk(b"zTXt", body)]))
    assert_civitai_infotext(result)
    assert result.found == ["civitai@png:raw-exif:UserComment"]
    assert not result.errors


def test_raw_profile_type_app1_text_from_exiftool():
    exif = comment_exif(b"ASCII\x00\x00\x00" + INFOTEXT.encode(), big_endian=False)
    text = raw_profile(b"Exif\x00\x00" + exif, name="APP1").encode("ascii")
    result = extract(png_with_chunks(after=[png_chunk(b"tEXt", b"Raw profile type APP1\x00" + text)]))
    assert_civitai_infotext(result)


def test_exif_chunk_beside_parameters_keeps_both_pieces():
    parameters = png_chunk(b"tEXt", b"parameters\x00" + INFOTEXT.encode())
    exif = png_chunk(b"eXIf", comment_exif(b"UNICODE\x00" + INFOTEXT.encode("utf-16-le"), big_endian=False))
    result = extract(png_with_chunks(before=[parameters, exif]))
    assert_civitai_infotext(result)
    assert result.found == ["civitai@png:tEXt:parameters"]  # one infotext reading per file
    assert {"png:tEXt:parameters", "png:eXIf:UserComment"} <= {p.location for p in result.raw}


# --- bad variants --------------------------------------------------------------------------------


def pixels_still_read(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.size in ((32, 32), (4, 4))


def test_truncated_exif_chunk_is_an_error_not_a_crash():
    exif = comment_exif(b"UNICODE\x00" + INFOTEXT.encode("utf-16-be"), big_endian=True)
    data = png_with_chunks(before=[png_chunk(b"eXIf", exif[:40])])
    result = extract(data)
    assert not result.has_generation_metadata
    assert any("outside the block" in e or "truncated" in e for e in result.errors)
    pixels_still_read(data)


def test_exif_chunk_with_wrong_offsets_and_garbage():
    exif = bytearray(comment_exif(b"UNICODE\x00" + INFOTEXT.encode("utf-16-be"), big_endian=False))
    exif[4:8] = (999_999).to_bytes(4, "little")  # IFD0 far outside
    for body in (bytes(exif), b"II*", b"not a tiff at all", b""):
        data = png_with_chunks(before=[png_chunk(b"eXIf", body)])
        result = extract(data)
        assert not result.has_generation_metadata
        assert result.errors, body[:8]
        pixels_still_read(data)


def test_raw_profile_damaged_hex_and_wrong_length():
    exif = b"Exif\x00\x00" + comment_exif(b"ASCII\x00\x00\x00" + INFOTEXT.encode(), big_endian=True)
    wrong_length = raw_profile(exif, declared=len(exif) + 10)
    result = extract(png_with_chunks(before=[png_chunk(b"tEXt", b"Raw profile type exif\x00" + wrong_length.encode())]))
    assert_civitai_infotext(result)  # the bytes are all there: read them, say the header lied
    assert any("header says" in e for e in result.errors)

    damaged = raw_profile(exif)
    damaged = damaged[:60] + "zz" + damaged[62:]
    data = png_with_chunks(before=[png_chunk(b"tEXt", b"Raw profile type exif\x00" + damaged.encode())])
    result = extract(data)
    assert any("hex dump damaged" in e for e in result.errors)
    pixels_still_read(data)

    for text in ("", "\nexif\n", "\nexif\nabc\n00", "\nexif\n 4\n4d4d"):
        result = extract(png_with_chunks(before=[png_chunk(b"tEXt", b"Raw profile type exif\x00" + text.encode())]))
        assert result.errors and not result.has_generation_metadata, text
