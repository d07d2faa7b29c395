"""A1111-family infotexts and their containers, built the way the writers build them.

Infotexts follow A1111's ``create_infotext`` (values quoted with ``json.dumps`` when they hold
``,``/``:``/newlines), the Lora and TI hash lists, the civitai extension's ``Hashes: {...}``,
Civitai's ``Civitai resources: [...]`` and sd-dynamic-prompts' ``Template:`` lines appended
after the parameter line. Containers reuse the byte builders of test_meta_containers.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from PIL import Image

from audit.meta import extract
from audit.meta.a1111 import parse_infotext
from tests.meta_fixtures import png_chunk, stealth_image, jpeg_with_exif, png_with_chunks, tiff

PROMPT = "a red triangle on a grey background"
PARAMS = "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x512"
INFOTEXT = f"{PROMPT}\nNegative prompt: a blue circle\n{PARAMS}"


def quote(value: str) -> str:
    """A1111's infotext_utils.quote."""
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ",:\n") else value


def resources(meta) -> dict[tuple[str, str], tuple]:
    return {(r.kind, r.name): (r.hash, r.weight) for r in meta.resources}


# --- the infotext text itself -------------------------------------------------------------


def test_multiline_prompt_and_negative():
    meta = parse_infotext(
        f"a red triangle\non a grey background\nNegative prompt: a blue circle\nyellow star\n{PARAMS}"
    )
    assert meta.prompt == "a red triangle\non a grey background"
    assert meta.negative_prompt == "a blue circle\nyellow star"
    assert (meta.steps, meta.sampler, meta.scheduler, meta.cfg_scale, meta.seed) == (
        20,
        "DPM++ 2M",
        "Karras",
        7.0,
        "1234",
    )


def test_prompt_without_negative_and_no_prompt_at_all():
    meta = parse_infotext(f"{PROMPT}\n{PARAMS}")
    assert meta.prompt == PROMPT and meta.negative_prompt is None
    meta = parse_infotext(PARAMS)
    assert meta.prompt == "" and meta.negative_prompt is None and meta.steps == 20
    meta = parse_infotext(f"Negative prompt: a blue circle\n{PARAMS}")
    assert meta.prompt == "" and meta.negative_prompt == "a blue circle"


def test_parameter_like_text_inside_the_prompt_stays_prompt():
    text = f"a red triangle, Steps: 3, Sampler: none, CFG scale: 1\nNegative prompt: grey, Steps: 30\n{PARAMS}"
    meta = parse_infotext(text)
    assert meta.prompt == "a red triangle, Steps: 3, Sampler: none, CFG scale: 1"
    assert meta.negative_prompt == "grey, Steps: 30"
    assert meta.steps == 20 and meta.seed == "1234"


def test_crlf_trailing_whitespace_and_seeds_beyond_32_bits():
    text = f"{PROMPT}  \r\nNegative prompt: a blue circle \r\n{PARAMS.replace('1234', str(2**64 - 1))}  \r\n\r\n"
    meta = parse_infotext(text)
    assert meta.prompt == PROMPT and meta.negative_prompt == "a blue circle"
    assert meta.seed == str(2**64 - 1) and meta.extra["width"] == 512


def test_quoted_values_with_commas_colons_escaped_quotes_and_newlines():
    hires = 'a green "square", large\nsecond line'
    text = (
        f"{PROMPT}\n{PARAMS}, ADetailer model: face_yolov8n.pt, ADetailer prompt: {quote('a blue circle, small')}, "
        f"ControlNet 0: {quote('Module: canny, Model: control_canny [d14c016b], Weight: 1.0')}, "
        f"Hires prompt: {quote(hires)}, Hires upscale: 2, Denoising strength: 0.5"
    )
    meta = parse_infotext(text)
    params = meta.extra["parameters"]
    assert params["ADetailer prompt"] == "a blue circle, small"
    assert params["ControlNet 0"].startswith("Module: canny, Model: control_canny")
    assert params["Hires prompt"] == hires
    assert params["Hires upscale"] == "2" and meta.extra["denoise"] == "0.5"
    assert meta.model is None  # "Model:" inside the quoted ControlNet value is not the checkpoint


def test_dynamic_prompts_template_lines_after_the_parameters():
    # sd-dynamic-prompts appends these after the parameter line; templates hold commas,
    # colons and newlines of their own
    text = (
        f"{INFOTEXT}\nTemplate: a {{red|green}} triangle, style: flat, colour: red, size: big\n"
        "on a grey background\nNegative Template: {blue|yellow}, circle"
    )
    meta = parse_infotext(text)
    assert meta.prompt == PROMPT and meta.negative_prompt == "a blue circle"
    assert meta.seed == "1234" and meta.extra["width"] == 512
    assert meta.extra["template"] == "a {red|green} triangle, style: flat, colour: red, size: big\non a grey background"
    assert meta.extra["negative_template"] == "{blue|yellow}, circle"
    assert "Template" not in meta.extra["parameters"]


def test_a_last_line_that_is_not_parameters_does_not_swallow_the_seed():
    meta = parse_infotext(f"{INFOTEXT}\nsaved by a toy script")
    assert meta.seed == "1234" and meta.sampler == "DPM++ 2M"
    assert meta.extra["trailing_text"] == "saved by a toy script"


@pytest.mark.parametrize(
    "tail, generator",
    [
        ("Version: v1.10.1", "a1111"),
        ("Distilled CFG Scale: 3.5, Version: f2.0.1v1.10.1-previous-313-g8a042934", "forge"),
        ("Version: f1.0.0v2-v1.1", "reforge"),
        ("Version: classic", "forge-classic"),
        ("Version: neo", "forge-neo"),
        ("Backend: Diffusers, App: SD.Next, Version: 56a8aea, Pipeline: StableDiffusionXLPipeline", "sdnext"),
    ],
)
def test_writer_identified_from_its_version_fields(tail, generator):
    assert (
        parse_infotext(f"{PROMPT}\n{PARAMS}, Model hash: 45a21ea00a, Model: toyShapes_v1, {tail}").generator
        == generator
    )


# --- resources ------------------------------------------------------------------------------


def test_extra_networks_matched_to_lora_and_ti_hashes_by_name():
    text = (
        f"{PROMPT} <lora:shapeA:0.8> <lyco:shapeB:0.5> <hypernet:shapeC:1>\nNegative prompt: grey\n"
        f"{PARAMS}, Model hash: abcdef1234, Model: toyShapes_v1, VAE hash: 735e4c3a44, VAE: toy.vae.pt, "
        f"Lora hashes: {quote('shapeA: 1234abcd5678, shapeB: 5678abcd1234')}, TI hashes: {quote('embA: aaaa1111')}"
    )
    meta = parse_infotext(text)
    assert meta.model == "toyShapes_v1" and meta.model_hash == "abcdef1234"
    assert resources(meta) == {
        ("checkpoint", "toyShapes_v1"): ("abcdef1234", None),
        ("lora", "shapeA"): ("1234abcd5678", 0.8),
        ("lycoris", "shapeB"): ("5678abcd1234", 0.5),  # one resource, not a lora and a lycoris
        ("hypernetwork", "shapeC"): (None, 1.0),
        ("embedding", "embA"): ("aaaa1111", None),
        ("vae", "toy.vae.pt"): ("735e4c3a44", None),
    }


def test_civitai_extension_hashes_json():
    hashes = {"vae": "c6a580b13a", "embed:embA": "c74b4e810b", "model": "7f96a1a9ca", "lora:shapeA": "7c6bad76eb"}
    meta = parse_infotext(f"{PROMPT} <lora:shapeA:0.6>\n{PARAMS}, Hashes: {json.dumps(hashes)}")
    assert meta.model_hash == "7f96a1a9ca"
    found = resources(meta)
    assert found[("checkpoint", "7f96a1a9ca")] == ("7f96a1a9ca", None)
    assert found[("lora", "shapeA")] == ("7c6bad76eb", 0.6)
    assert found[("embedding", "embA")] == ("c74b4e810b", None)
    assert found[("vae", "c6a580b13a")] == ("c6a580b13a", None)


def test_civitai_resources_and_metadata_json():
    civitai = [
        {"type": "checkpoint", "modelVersionId": 290640, "modelName": "Toy XL", "modelVersionName": "v6"},
        {"type": "lora", "weight": 0.7, "modelVersionId": 11, "modelName": 'Shape, "A"', "modelVersionName": "v1"},
        {"type": "embed", "modelVersionId": 12, "modelName": "embA", "modelVersionName": "v2"},
        {"type": "lora", "weight": 0.4, "air": "urn:air:sdxl:lora:civitai:13@14"},
    ]
    text = (
        f"{PROMPT}\nNegative prompt: grey\n{PARAMS}, Clip skip: 2, Created Date: 2024-05-01T10:00:00.0000000Z, "
        f'Civitai resources: {json.dumps(civitai, separators=(",", ":"))}, Civitai metadata: {{"remixOfId":1}}'
    )
    meta = parse_infotext(text)
    assert meta.generator == "civitai" and meta.seed == "1234" and meta.extra["clip_skip"] == "2"
    assert meta.model is None  # Civitai names no checkpoint file; the resource carries it
    assert resources(meta) == {
        ("checkpoint", "Toy XL v6"): ("civitai:290640", None),  # the version id: AIR lists match it
        ("lora", 'Shape, "A" v1'): ("civitai:11", 0.7),
        ("embedding", "embA v2"): ("civitai:12", None),
        ("lora", "urn:air:sdxl:lora:civitai:13@14"): ("urn:air:sdxl:lora:civitai:13@14", 0.4),
    }
    assert meta.extra["parameters"]["Civitai metadata"] == {"remixOfId": 1}


def test_old_hypernet_parameters():
    meta = parse_infotext(f"{PROMPT}\n{PARAMS}, Hypernet: shapeNet, Hypernet hash: 0a1b2c3d, Hypernet strength: 0.6")
    assert resources(meta)[("hypernetwork", "shapeNet")] == ("0a1b2c3d", 0.6)


@pytest.mark.parametrize(
    "text",
    [
        "Steps:",
        "Negative prompt:",
        'Steps: 1, Lora hashes: "unterminated',
        'Steps: 2, Hashes: {"a": [1, 2',
        'Steps: x, Seed: nan, CFG scale: inf, Size: axb, Civitai resources: [1, "a", null]',
        "\x00Steps: 1\x00, Sampler: \ud800, Seed: 1",
        "Negative prompt: " + "(" * 5000,
        "Steps: 1, " * 5000,
    ],
)
def test_malformed_infotexts_never_raise(text):
    meta = parse_infotext(text)
    assert meta is None or isinstance(meta.prompt, str)
    assert isinstance(
        extract(png_with_chunks([png_chunk(b"tEXt", b"parameters\x00" + text.encode("utf-8", "replace"))])).errors, list
    )


# --- containers -----------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
def test_png_itxt_with_language_tag_after_idat(compressed):
    text = INFOTEXT.encode()
    body = (
        b"parameters\x00"
        + bytes([int(compressed), 0])
        + b"en-US\x00Parameters\x00"
        + (zlib.compress(text) if compressed else text)
    )
    result = extract(png_with_chunks(after=[png_chunk(b"iTXt", body)]))
    assert result.best.prompt == PROMPT and result.found == ["a1111@png:iTXt:parameters"]


@pytest.mark.parametrize(
    "prefix", [b"\x00" * 8, b"Unicode\x00", b"UNDEF\x00\x00\x00", b"\x01\x02\x03\x04\x05\x06\x07\x08"]
)
def test_user_comment_code_fields_never_leak_into_the_prompt(prefix):
    comment = prefix + INFOTEXT.encode()
    result = extract(jpeg_with_exif(tiff([], big_endian=False, exif_entries=[(0x9286, 7, comment)])))
    assert result.best.prompt == PROMPT and result.best.seed == "1234"


@pytest.mark.parametrize("big_endian_tiff", [False, True])
@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le"])
def test_user_comment_unicode_with_non_ascii_prompt(big_endian_tiff, encoding):
    prompt = "a red triangle, caf\u00e9 \u30c6\u30b9\u30c8"
    comment = b"UNICODE\x00" + INFOTEXT.replace(PROMPT, prompt).encode(encoding)
    result = extract(jpeg_with_exif(tiff([], big_endian=big_endian_tiff, exif_entries=[(0x9286, 7, comment)])))
    assert result.best.prompt == prompt


def test_image_description_xp_comment_and_jpeg_com():
    described = extract(jpeg_with_exif(tiff([(0x010E, 2, INFOTEXT.encode() + b"\x00")], big_endian=True)))
    assert described.found == ["a1111@exif:ImageDescription"] and described.best.seed == "1234"
    xp = extract(jpeg_with_exif(tiff([(0x9C9C, 1, INFOTEXT.encode("utf-16-le") + b"\x00\x00")], big_endian=True)))
    assert xp.found == ["a1111@exif:XPComment"] and xp.best.prompt == PROMPT
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, "JPEG", comment=INFOTEXT.encode())
    assert extract(buffer.getvalue()).found == ["a1111@jpeg:COM"]


def test_jpeg_with_xmp_app1_before_exif_app1():
    xmp = (
        b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:RDF><rdf:Description><dc:description><rdf:Alt>"
        b'<rdf:li xml:lang="x-default">a blue square</rdf:li></rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta>'
    )
    data = jpeg_with_exif(
        tiff([], big_endian=True, exif_entries=[(0x9286, 7, b"UNICODE\x00" + INFOTEXT.encode("utf-16-be"))])
    )
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp + data[2:]
    result = extract(data)
    assert result.best.prompt == PROMPT
    assert {"xmp", "xmp:description", "exif:UserComment"} <= {p.location for p in result.raw}


def _riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"WEBP" + b"".join(c + struct.pack("<I", len(d)) + d + b"\x00" * (len(d) & 1) for c, d in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("header", [b"Exif\x00\x00", b""])
def test_webp_exif_chunk_with_and_without_exif_header(header):
    # A1111 hands piexif.dump() output (with the header) to PIL; the WebP spec says no header
    exif = header + tiff([], big_endian=True, exif_entries=[(0x9286, 7, b"UNICODE\x00" + INFOTEXT.encode("utf-16-be"))])
    vp8x = bytes([0x08, 0, 0, 0]) + (3).to_bytes(3, "little") * 2
    result = extract(_riff([(b"VP8X", vp8x), (b"EXIF", exif)]))
    assert result.best.seed == "1234" and result.found == ["a1111@exif:UserComment"]


def test_webp_xmp_chunk_is_read():
    packet = (
        b'<x:xmpmeta><rdf:RDF><rdf:Description exif:UserComment="'
        + INFOTEXT.replace("\n", "&#10;").encode()
        + b'"/></rdf:RDF></x:xmpmeta>'
    )
    result = extract(_riff([(b"VP8X", bytes([0x04, 0, 0, 0]) + b"\x03\x00\x00" * 2), (b"XMP ", packet)]))
    assert result.best.prompt == PROMPT and result.found == ["a1111@xmp:UserComment"]


def test_tiff_file_tags_are_read_without_pixels():
    from PIL import TiffImagePlugin

    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[270] = INFOTEXT  # ImageDescription
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "TIFF", tiffinfo=info)
    result = extract(buffer.getvalue())
    assert result.best.prompt == PROMPT and result.found == ["a1111@tiff:ImageDescription"]


@pytest.mark.parametrize("brand", [b"avif", b"heic"])
def test_isobmff_without_metadata_is_clean(brand):
    ftyp = struct.pack(">I", 24) + b"ftyp" + brand + b"\x00" * 4 + brand + b"mif1"
    result = extract(ftyp + b"\x00" * 64)
    assert not result.has_generation_metadata and result.errors == []


def test_novelai_alpha_stealth_json():
    # NovelAI writes gzip'd JSON (stealth_pngcomp) with Comment holding its own JSON
    comment = json.dumps(
        {
            "prompt": "a purple star on a black background",
            "uc": "blurry",
            "steps": 28,
            "scale": 5.0,
            "seed": 1234,
            "sampler": "k_euler_ancestral",
        }
    )
    record = json.dumps(
        {
            "Description": "a purple star on a black background",
            "Software": "NovelAI",
            "Source": "NovelAI Diffusion V4.5 1229B44F",
            "Comment": comment,
        }
    )
    buffer = io.BytesIO()
    stealth_image(record, compressed=True, rgb=False).save(buffer, "PNG")
    result = extract(buffer.getvalue())
    assert result.best.generator == "novelai" and result.best.seed == "1234"
    assert result.best.prompt == "a purple star on a black background"


def test_rgb_stealth_in_an_rgba_image_when_pixels_are_given():
    # the extension fills its RGB buffer from RGBA pixels too, so rgb mode can hide in RGBA
    buffer = io.BytesIO()
    stealth_image(INFOTEXT, compressed=True, rgb=True).convert("RGBA").save(buffer, "PNG")
    data = buffer.getvalue()
    assert extract(data, Image.open(io.BytesIO(data))).best.seed == "1234"


def test_lossless_webp_alpha_stealth():
    buffer = io.BytesIO()
    stealth_image(INFOTEXT, compressed=False, rgb=False).save(buffer, "WEBP", lossless=True)
    result = extract(buffer.getvalue())
    assert result.found == ["a1111@webp:stealth:stealth_pnginfo"] and result.best.prompt == PROMPT


def test_stealth_length_beyond_the_image_is_an_error_not_an_exception():
    image = stealth_image(INFOTEXT, compressed=True, rgb=False).crop((0, 0, 4, 64))  # cut the payload short
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    result = extract(buffer.getvalue())
    assert not result.has_generation_metadata
    assert any("stealth" in e for e in result.errors)


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def heif_with_exif(tiff_bytes: bytes, brand: bytes = b"heic") -> bytes:
    """ftyp, meta (iinf with one infe v2 "Exif" item, iloc v0 pointing into mdat), mdat."""
    payload = struct.pack(">I", 6) + b"Exif\x00\x00" + tiff_bytes  # offset to the TIFF header first
    infe = _box(b"infe", bytes([2, 0, 0, 0]) + struct.pack(">HH", 1, 0) + b"Exif" + b"\x00")
    iinf = _box(b"iinf", bytes(4) + struct.pack(">H", 1) + infe)
    ftyp = _box(b"ftyp", brand + bytes(4) + brand + b"mif1")

    def build(offset: int) -> bytes:
        iloc = _box(b"iloc", bytes(4) + bytes([0x44, 0x00]) + struct.pack(">HHHHII", 1, 1, 0, 1, offset, len(payload)))
        return _box(b"meta", bytes(4) + _box(b"hdlr", bytes(8) + b"pict" + bytes(13)) + iinf + iloc)

    head = ftyp + build(0)
    return ftyp + build(len(head) + 8) + _box(b"mdat", payload)


@pytest.mark.parametrize("brand", [b"heic", b"avif"])
def test_heif_and_avif_exif_item_without_a_pil_plugin(brand):
    comment = b"UNICODE\x00" + INFOTEXT.encode("utf-16-be")  # what A1111 writes into AVIF via piexif
    data = heif_with_exif(tiff([], big_endian=True, exif_entries=[(0x9286, 7, comment)]), brand)
    result = extract(data)
    assert result.best.prompt == PROMPT and result.found == ["a1111@exif:UserComment"] and result.errors == []
    for cut in range(0, len(data), 5):
        assert isinstance(extract(data[:cut]).errors, list)  # truncated boxes: errors at most


def test_avif_written_by_pil_with_exif_and_xmp():
    buffer = io.BytesIO()
    try:
        Image.new("RGB", (8, 8)).save(
            buffer,
            "AVIF",
            exif=b"Exif\x00\x00"
            + tiff([], big_endian=True, exif_entries=[(0x9286, 7, b"UNICODE\x00" + INFOTEXT.encode("utf-16-be"))]),
        )
    except (KeyError, OSError, ValueError):
        pytest.skip("this PIL cannot write AVIF")
    result = extract(buffer.getvalue())
    assert result.best.seed == "1234" and result.found == ["a1111@exif:UserComment"]
