"""Container readers on tiny hand-built files: PNG text chunks (also after IDAT), EXIF
UserComment in every encoding and byte order, WebP EXIF, JPEG COM, alpha "stealth" data."""

from __future__ import annotations

import io
import zlib

from PIL import Image

from audit.meta import extract
from tests.meta_fixtures import INFOTEXT, jpeg_with_exif, png_chunk, png_with_chunks, stealth_image, tiff


def test_ztxt_after_idat_is_found():
    body = b"parameters\x00\x00" + zlib.compress(INFOTEXT.encode("latin-1"))
    result = extract(png_with_chunks(after=[png_chunk(b"zTXt", body)]))
    assert result.best.prompt == "a red circle on a white background"
    assert result.best.seed == "42" and result.best.steps == 12 and result.best.cfg_scale == 6.5
    assert result.found == ["a1111@png:zTXt:parameters"]


def test_itxt_compressed_and_plain_and_utf8_in_text():
    prompt = "a green star, caf\u00e9 \u30c6\u30b9\u30c8"
    text = INFOTEXT.replace("a red circle on a white background", prompt)
    compressed = b"parameters\x00\x01\x00\x00\x00" + zlib.compress(text.encode("utf-8"))
    assert extract(png_with_chunks([png_chunk(b"iTXt", compressed)])).best.prompt == prompt
    plain = b"parameters\x00\x00\x00\x00\x00" + text.encode("utf-8")
    assert extract(png_with_chunks([png_chunk(b"iTXt", plain)])).best.prompt == prompt
    # UTF-8 written into a Latin-1 tEXt chunk, as most generators do
    latin = b"parameters\x00" + text.encode("utf-8")
    assert extract(png_with_chunks([png_chunk(b"tEXt", latin)])).best.prompt == prompt


def test_user_comment_unicode_big_endian_inside_little_endian_tiff():
    comment = b"UNICODE\x00" + INFOTEXT.encode("utf-16-be")
    data = jpeg_with_exif(tiff([], big_endian=False, exif_entries=[(0x9286, 7, comment)]))
    assert extract(data).best.prompt == "a red circle on a white background"


def test_user_comment_unicode_little_endian_inside_big_endian_tiff():
    comment = b"UNICODE\x00" + INFOTEXT.encode("utf-16-le")
    data = jpeg_with_exif(tiff([], big_endian=True, exif_entries=[(0x9286, 7, comment)]))
    assert extract(data).best.negative_prompt == "blue square"


def test_user_comment_ascii_jis_and_unprefixed():
    for comment in (
        b"ASCII\x00\x00\x00" + INFOTEXT.encode(),
        b"JIS\x00\x00\x00\x00\x00" + INFOTEXT.encode("iso2022_jp"),
        b"\x00" * 8 + INFOTEXT.encode(),
        INFOTEXT.encode("utf-8"),
    ):
        data = jpeg_with_exif(tiff([], big_endian=True, exif_entries=[(0x9286, 7, comment)]))
        assert extract(data).best.seed == "42", comment[:8]


def test_user_comment_misplaced_in_ifd0_and_wrong_type_survives():
    data = jpeg_with_exif(tiff([(0x9286, 2, INFOTEXT.encode() + b"\x00")], big_endian=False))
    assert extract(data).best.steps == 12
    # a tag whose offset points outside the block: an error, not an exception
    broken = tiff([(0x010E, 2, b"x" * 40)], big_endian=False)
    broken = broken[:-30]
    result = extract(jpeg_with_exif(broken))
    assert not result.has_generation_metadata
    assert any("outside" in e for e in result.errors)


def test_webp_exif_chunk_with_comfyui_labels():
    prompt_graph = (
        '{"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a yellow square", "clip": ["4", 1]}}, '
        '"2": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 9, "cfg": 3.0, "sampler_name": "euler", '
        '"scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["1", 0], "negative": ["3", 0], '
        '"latent_image": ["5", 0]}}, "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}}, '
        '"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "toy.safetensors"}}, '
        '"5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}'
    )
    exif = tiff([(0x010F, 2, ("Prompt: " + prompt_graph).encode() + b"\x00")], big_endian=False)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, "WEBP", exif=b"Exif\x00\x00" + exif)
    result = extract(buffer.getvalue())
    assert result.best.generator == "comfyui"
    assert result.best.prompt == "a yellow square" and result.best.negative_prompt == "blurry"
    assert result.best.model == "toy.safetensors" and result.best.seed == "7"


def test_jpeg_comment_is_raw_evidence_not_a_prompt():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, "JPEG", comment=b"re-saved in an editor")
    result = extract(buffer.getvalue())
    assert not result.has_generation_metadata
    assert [p.location for p in result.raw] == ["jpeg:COM"]


def test_stealth_alpha_plain_and_gzip_found_without_text_chunks():
    for compressed in (False, True):
        image = stealth_image(INFOTEXT, compressed, rgb=False)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        result = extract(buffer.getvalue())
        assert result.best.prompt == "a red circle on a white background"
        assert result.found[0].startswith("a1111@png:stealth:stealth_png")


def test_stealth_rgb_read_when_pixels_are_given():
    image = stealth_image(INFOTEXT, True, rgb=True)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()
    opened = Image.open(io.BytesIO(data))
    assert extract(data, opened).best.seed == "42"


def test_alpha_without_stealth_bails_out_quietly():
    buffer = io.BytesIO()
    Image.new("RGBA", (300, 300), (1, 2, 3, 255)).save(buffer, "PNG")
    result = extract(buffer.getvalue())
    assert not result.has_generation_metadata and result.errors == []
