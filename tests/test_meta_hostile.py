"""Hostile metadata: what one file may cost the metadata reader, in memory, in the catalog and
in time, for every container and parser. Every file here is built by the test.

* caps: decompression bombs, oversized chunks, tags, segments, sidecars and manifest cells
  are cut to the stated limits of ``audit.meta.limits`` and the cut is recorded;
* linearity: each parser is timed on hostile text at two sizes; time must grow about
  linearly (quadratic growth is 16x for 4x the input, linear 4x) and stay small;
* the CPU budget stops a reading (cooperatively, and by a timer signal on the main thread);
* JSON nested 100,000 levels deep is refused with a recorded error wherever it is read;
* a crawl of bomb PNGs commits a small catalog and exits 0.
"""

from __future__ import annotations

import gc
import io
import json
import random
import signal
import sqlite3
import struct
import threading
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from audit.meta import PARSERS, extract, limits
from audit.meta.base import GenerationMetadata
from tests.cli_helper import audit_cli

MiB = 1 << 20
DEEP = 100_000


# --- file builders ---------------------------------------------------------------------


def chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def png(*chunks: bytes, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (4, 4), "white").save(buffer, "PNG")
    data = buffer.getvalue()
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + b"".join(chunks) + data[iend:]


def itxt(key: str, text: str) -> bytes:
    return chunk(b"iTXt", key.encode() + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def text_png(**pieces: str) -> bytes:
    return png(*(itxt(key, text) for key, text in pieces.items()))


def jpeg(*segments: tuple[int, bytes]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, "JPEG")
    data = buffer.getvalue()
    return (
        data[:2]
        + b"".join(bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body for marker, body in segments)
        + data[2:]
    )


def tiff_with(tag: int, typ: int, value: bytes) -> bytes:
    """A little-endian TIFF block with one IFD0 entry whose value lies after the IFD."""
    count = len(value) if typ in (1, 2, 7) else len(value) // 2
    return (
        b"II*\x00"
        + struct.pack("<I", 8)
        + struct.pack("<H", 1)
        + struct.pack("<HHII", tag, typ, count, 26)
        + struct.pack("<I", 0)
        + value
    )


def webp(*chunks: tuple[bytes, bytes]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, "WEBP", lossless=True)
    data = buffer.getvalue()
    extra = b"".join(
        fourcc + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"") for fourcc, body in chunks
    )
    body = data[12:] + extra
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def avif_with_exif(payload: bytes) -> bytes:
    """A minimal AVIF-branded ISOBMFF file: ftyp, meta (iinf with one Exif item, iloc)."""

    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + kind + body

    infe = box(b"infe", b"\x02\x00\x00\x00" + struct.pack(">HH", 1, 0) + b"Exif" + b"\x00")
    iinf = box(b"iinf", b"\x00\x00\x00\x00" + struct.pack(">H", 1) + infe)
    ftyp = box(b"ftyp", b"avif" + b"\x00\x00\x00\x00" + b"mif1avif")

    def layout(offset: int) -> bytes:
        iloc = box(
            b"iloc",
            b"\x00\x00\x00\x00"
            + bytes([0x44, 0x00])
            + struct.pack(">HHH", 1, 1, 0)
            + struct.pack(">H", 1)
            + struct.pack(">II", offset, len(payload)),
        )
        return box(b"meta", b"\x00\x00\x00\x00" + iinf + iloc)

    head = ftyp + layout(0)
    head = ftyp + layout(len(head) + 8)
    return head + box(b"mdat", payload)


def stealth_png(text: str, claimed_bits: int | None = None, size: int = 64) -> bytes:
    payload = text.encode()
    signature = b"stealth_pnginfo"
    bits_total = len(payload) * 8 if claimed_bits is None else claimed_bits
    bits = np.unpackbits(np.frombuffer(signature + struct.pack(">I", bits_total) + payload, dtype=np.uint8))
    stream = np.zeros(size * size, dtype=np.uint8)
    stream[: len(bits)] = bits[: size * size]
    pixels = np.full((size, size, 4), 200, dtype=np.uint8)
    pixels[:, :, 3] = (pixels[:, :, 3] & 0xFE) | stream.reshape(size, size).T
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, "PNG")
    return buffer.getvalue()


def bomb_payload(inflated: int = 60 * MiB) -> bytes:
    """zlib data inflating to ``inflated`` bytes of "a" (about 1000:1)."""
    compressor = zlib.compressobj(9)
    block = b"a" * MiB
    return b"".join(compressor.compress(block) for _ in range(inflated // MiB)) + compressor.flush()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return bomb_payload()


def ztxt(key: bytes, payload: bytes) -> bytes:
    return chunk(b"zTXt", key + b"\x00\x00" + payload)


def kept_chars(result) -> int:
    return sum(len(piece.text) for piece in result.raw)


def catalog_row_bytes(result) -> int:
    """What the worker stores of an extraction, serialised as it serialises it."""
    best = result.best
    stored = [
        best.prompt or "",
        best.negative_prompt or "",
        json.dumps([r.to_dict() for r in best.resources]),
        json.dumps(best.extra, default=str, ensure_ascii=False),
        json.dumps(result.errors),
        json.dumps(result.found),
        json.dumps([{"location": r.location, "key": r.key, "text": r.text} for r in result.raw], ensure_ascii=False),
    ]
    return sum(len(s.encode("utf-8")) for s in stored)


def measured(call):
    """(result, CPU seconds, peak traced bytes) of ``call()``."""
    gc.collect()
    tracemalloc.start()
    started = time.thread_time()
    try:
        result = call()
        elapsed = time.thread_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, elapsed, peak


# --- 1. caps -----------------------------------------------------------------------------


def test_many_ztxt_bombs_in_a_small_png_are_cut_in_bounded_time_and_memory(bomb):
    data = png(*(ztxt(b"workflow%d" % i, bomb) for i in range(20)))
    assert len(data) < 1.3 * MiB  # 20 chunks of 60 MiB each: 1.2 GB of text
    result, elapsed, peak = measured(lambda: extract(data))
    assert elapsed < 2.0, elapsed
    assert peak < 40 * MiB, peak  # the old reader held every 60 MiB chunk at once
    assert f"png:zTXt:workflow0 truncated: kept {limits.MAX_PIECE_CHARS} of {60 * MiB} characters" in result.errors
    assert kept_chars(result) <= limits.MAX_FILE_CHARS
    assert all(len(p.text) <= limits.MAX_PIECE_CHARS for p in result.raw)
    assert any("not read" in e and "limits" in e for e in result.errors)  # the pieces beyond the file's limit
    assert catalog_row_bytes(result) < 6 * MiB


def test_one_ztxt_bomb_in_a_62_kb_png_keeps_one_megabyte(bomb):
    data = png(ztxt(b"workflow", bomb))
    assert len(data) < 64 * 1024
    result, elapsed, peak = measured(lambda: extract(data))
    assert elapsed < 1.0 and peak < 16 * MiB, (elapsed, peak)
    assert result.errors == [f"png:zTXt:workflow truncated: kept {limits.MAX_PIECE_CHARS} of {60 * MiB} characters"]
    assert [len(p.text) for p in result.raw] == [limits.MAX_PIECE_CHARS]
    assert catalog_row_bytes(result) < 1.1 * MiB  # was 60 MB a file


def test_a_container_reader_used_on_its_own_keeps_the_same_limits(bomb):
    from audit.meta.containers import png as png_reader

    report = png_reader.read(png(ztxt(b"workflow", bomb), ztxt(b"other", bomb)))
    assert [len(p.text) for p in report.pieces] == [limits.MAX_PIECE_CHARS, limits.MAX_PIECE_CHARS]
    assert report.errors[0] == f"png:zTXt:workflow truncated: kept {limits.MAX_PIECE_CHARS} of {60 * MiB} characters"


def test_a_thousand_small_bombs_cost_what_a_few_do():
    small = bomb_payload(2 * MiB)  # each over the piece limit, each corrupt after its kept part
    corrupt = small[: len(small) // 2] + b"\xff" * 64
    data = png(*(ztxt(b"k%d" % i, corrupt) for i in range(1000)))
    result, elapsed, peak = measured(lambda: extract(data))
    assert elapsed < 2.0 and peak < 40 * MiB, (elapsed, peak)
    assert kept_chars(result) <= limits.MAX_FILE_CHARS
    assert len(result.errors) <= limits.MAX_ERRORS


@pytest.mark.parametrize(
    "name, build, location",
    [
        ("png tEXt", lambda n: png(chunk(b"tEXt", b"parameters\x00" + b"a" * n)), "png:tEXt:parameters"),
        ("png iTXt", lambda n: png(itxt("comment", "\u00e9" * (n // 2))), "png:iTXt:comment"),
        (
            "png iTXt compressed",
            lambda n: png(chunk(b"iTXt", b"workflow\x00\x01\x00\x00\x00" + zlib.compress(b"a" * n))),
            "png:iTXt:workflow",
        ),
        (
            "jpeg exif UserComment",
            lambda n: jpeg((0xE1, b"Exif\x00\x00" + tiff_with(0x9286, 7, b"ASCII\x00\x00\x00" + b"a" * 60000))),
            None,
        ),
        ("tiff ImageDescription", lambda n: tiff_with(0x010E, 2, b"a" * n), "tiff:ImageDescription"),
        (
            "webp exif UserComment",
            lambda n: webp((b"EXIF", tiff_with(0x9286, 7, b"UNICODE\x00" + "a".encode("utf-16-le") * n))),
            "exif:UserComment",
        ),
        ("webp xmp", lambda n: webp((b"XMP ", b"<x:xmpmeta>" + b"a" * n + b"</x:xmpmeta>")), "xmp"),
        (
            "avif exif item",
            lambda n: avif_with_exif(b"\x00\x00\x00\x00" + tiff_with(0x010E, 2, b"a" * n)),
            "exif:ImageDescription",
        ),
        ("stealth alpha", lambda n: stealth_png("a" * 400, claimed_bits=2**32 - 1, size=64), None),
    ],
)
def test_each_container_keeps_to_the_piece_limit(name, build, location):
    result = extract(build(3 * MiB))
    assert all(len(p.text) <= limits.MAX_PIECE_CHARS for p in result.raw), name
    assert kept_chars(result) <= limits.MAX_FILE_CHARS
    if location is not None:
        assert any(e.startswith(f"{location} truncated: kept {limits.MAX_PIECE_CHARS}") for e in result.errors), (
            result.errors
        )
    else:
        assert result.raw, name  # still read, within the limits


def test_many_segments_stop_at_the_file_limit():
    comments = [(0xFE, b"a" * 65000) for _ in range(200)]  # 13 MB of JPEG comments
    result = extract(jpeg(*comments))
    assert limits.MAX_FILE_CHARS - 65000 < kept_chars(result) <= limits.MAX_FILE_CHARS
    assert any("more metadata pieces not read" in e for e in result.errors)
    chunks = [chunk(b"tEXt", b"k%d\x00v" % i) for i in range(20000)]
    result = extract(png(*chunks))
    assert len(result.raw) == limits.MAX_PIECES
    assert any(f"{20000 - limits.MAX_PIECES} more metadata pieces not read" in e for e in result.errors)


def test_large_yaml_sidecars_are_kept_but_not_parsed():
    yaml_text = b"prompt: a red triangle\n" + b"".join(b"k%d: v\n" % i for i in range(40000))
    result = extract(b"", sidecars=[("a.yaml", yaml_text)], cpu_budget_s=30)
    assert any("YAML of" in e and "not parsed" in e for e in result.errors)
    assert [p.location for p in result.raw] == ["sidecar:a.yaml"]


def test_many_exif_and_xmp_blocks_are_walked_up_to_the_block_limit():
    entries = b"".join(struct.pack("<HHII", 0x010E, 2, 3, 0) for _ in range(1000))  # 1000 tags each
    block = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1000) + entries + b"\x00" * 4
    xmp = b"http://ns.adobe.com/xap/1.0/\x00" + b'<x dc:description="a red triangle"/>'
    data = jpeg(*([(0xE1, block)] * 400 + [(0xE1, xmp)] * 400))
    started = time.thread_time()
    result = extract(data, cpu_budget_s=60)
    elapsed = time.thread_time() - started
    assert elapsed < 0.5, elapsed  # 32 of 400 blocks of 1000 entries walked
    assert any(f"{limits.MAX_BLOCKS} EXIF/XMP blocks" in e for e in result.errors)


def test_sidecars_and_manifest_fields_keep_to_the_limits():
    huge = b"a" * (3 * MiB)
    result = extract(
        b"",
        sidecars=[("a.txt", huge), ("a.json", b'{"prompt": "' + huge + b'"}'), ("b.yaml", b"prompt: " + huge)],
        fields={"prompt": "p" * (3 * MiB), "other": list(range(10**6))},
    )
    assert all(len(p.text) <= limits.MAX_PIECE_CHARS for p in result.raw)
    assert kept_chars(result) <= limits.MAX_FILE_CHARS
    assert any(e.startswith("sidecar:a.txt truncated") for e in result.errors)
    assert any(e.startswith("sidecar:a.json truncated") for e in result.errors)
    assert any("manifest fields cut" in e for e in result.errors)
    assert result.best.prompt and len(result.best.prompt) <= limits.MAX_PIECE_CHARS  # the .txt prompt, cut


def test_a_truncated_workflow_fails_to_parse_and_says_so():
    graph = {
        str(i): {"class_type": "CLIPTextEncode", "inputs": {"text": "a red triangle " * 10, "clip": ["x", 1]}}
        for i in range(12000)
    }
    text = json.dumps(graph)
    assert len(text) > limits.MAX_PIECE_CHARS
    result = extract(text_png(prompt=text))
    assert any(e.startswith("png:iTXt:prompt truncated") for e in result.errors)
    assert any("comfyui graph in png:iTXt:prompt is not valid JSON" in e for e in result.errors)


def _api(nodes: dict) -> str:
    return json.dumps(nodes)


def _sampler(positive, negative=None, seed=1) -> dict:
    inputs = {
        "seed": seed,
        "steps": 20,
        "cfg": 7,
        "sampler_name": "euler",
        "scheduler": "normal",
        "denoise": 1.0,
        "model": ["ckpt", 0],
        "positive": positive,
        "latent_image": ["latent", 0],
    }
    if negative is not None:
        inputs["negative"] = negative
    return {"class_type": "KSampler", "inputs": inputs}


BASE = {
    "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "toy.safetensors"}},
    "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
}


def test_thousands_of_samplers_sharing_a_long_prompt_stay_small():
    nodes = dict(
        BASE, enc={"class_type": "CLIPTextEncode", "inputs": {"text": " a red triangle " * 3000, "clip": ["ckpt", 1]}}
    )
    nodes.update({f"s{i}": _sampler(["enc", 0], ["enc", 0], seed=i) for i in range(3000)})
    text = _api(nodes)
    assert len(text) < limits.MAX_PIECE_CHARS  # serialised in full, 3000 x 2 x 48 KB of prompts: 300 MB
    result, elapsed, peak = measured(lambda: extract(text_png(prompt=text)))
    assert result.best.generator == "comfyui" and result.best.prompt.startswith(" a red triangle")
    assert len(result.best.extra["samplers"]) <= 256
    assert any("3000 samplers" in e for e in result.errors)
    assert elapsed < 3.0 and peak < 120 * MiB, (elapsed, peak)
    assert len(json.dumps(result.best.extra)) < 1.2 * MiB


def test_concatenation_ladders_and_replace_bombs_stay_small():
    nodes = dict(BASE, t0={"class_type": "PrimitiveString", "inputs": {"value": "ab" * 1000}})
    for i in range(1, 400):  # each level doubles the previous text
        nodes[f"t{i}"] = {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": [f"t{i - 1}", 0], "string_b": [f"t{i - 1}", 0], "delimiter": ""},
        }
    nodes["rep"] = {
        "class_type": "StringFunction|pysssss",
        "inputs": {"action": "replace", "text_a": ["t0", 0], "text_b": "a", "text_c": ["t399", 0]},
    }
    nodes["enc"] = {"class_type": "CLIPTextEncode", "inputs": {"text": ["rep", 0], "clip": ["ckpt", 1]}}
    nodes["wide"] = {"class_type": "Text Concatenate", "inputs": {f"text_{i}": ["t399", 0] for i in range(3000)}}
    nodes["enc2"] = {"class_type": "CLIPTextEncode", "inputs": {"text": ["wide", 0], "clip": ["ckpt", 1]}}
    nodes["s"] = _sampler(["enc", 0], ["enc2", 0])
    result, elapsed, peak = measured(lambda: extract(text_png(prompt=_api(nodes))))
    assert result.best.generator == "comfyui"
    assert len(result.best.prompt) <= 65536 and len(result.best.negative_prompt or "") <= 65536
    assert elapsed < 3.0 and peak < 100 * MiB, (elapsed, peak)


def test_resources_fields_and_errors_are_bounded():
    hashes = ", ".join(f"lora{i}: {i:08x}" for i in range(50000))
    text = f'a red triangle\nSteps: 1e308, Seed: \u00b2, Model: {"m" * 5000}, CFG scale: 1e999, Lora hashes: "{hashes}"'
    result = extract(text_png(parameters=text))
    best = result.best
    assert not any("parser failed" in e for e in result.errors), result.errors
    assert best.steps is None and best.seed is None and best.cfg_scale is None  # not storable numbers
    assert len(best.resources) <= limits.MAX_RESOURCES and len(best.model) <= limits.MAX_NAME_CHARS
    broken = png(*(chunk(b"tEXt", b"x" * 2000) for _ in range(5000)))  # no keyword separators
    errors = extract(broken).errors
    assert len(errors) <= limits.MAX_ERRORS and all(len(e) <= limits.MAX_ERROR_CHARS for e in errors)


def test_long_keywords_and_names_are_clipped():
    result = extract(
        png(chunk(b"tEXt", b"k" * 1000 + b"\x00value")), sidecars=[("s" * 5000 + ".txt", b"a blue square")]
    )
    assert all(
        len(p.location) <= limits.MAX_LOCATION_CHARS + 1 and len(p.key) <= limits.MAX_LOCATION_CHARS + 1
        for p in result.raw
    )


# --- 2. time: every parser linear on hostile text ---------------------------------------


def _comfy_chain(n):
    count = n // 90
    nodes = dict(BASE, c0={"class_type": "CLIPTextEncode", "inputs": {"text": "a red triangle", "clip": ["ckpt", 1]}})
    for i in range(1, count):
        nodes[f"c{i}"] = {
            "class_type": "ConditioningCombine",
            "inputs": {"conditioning_1": [f"c{i - 1}", 0], "conditioning_2": [f"c{max(0, i - 2)}", 0]},
        }
    nodes["s"] = _sampler([f"c{count - 1}", 0])
    return {"data": text_png(prompt=_api(nodes))}


def _comfy_ring(n):
    count = n // 80
    nodes = dict(BASE)
    for i in range(count):
        nodes[f"r{i}"] = {
            "class_type": "ConditioningConcat",
            "inputs": {"conditioning_to": [f"r{(i + 1) % count}", 0], "text": [f"r{(i + 7) % count}", 0]},
        }
    nodes["s"] = _sampler(["r0", 0], ["r1", 0])
    return {"data": text_png(prompt=_api(nodes))}


def _comfy_random_links(n):
    rng = random.Random(7)
    count = n // 150
    nodes = dict(BASE)
    for i in range(count):
        nodes[str(i)] = {
            "class_type": rng.choice(["CLIPTextEncode", "KSampler", "StringConcatenate", "LoraLoader"]),
            "inputs": {
                k: [str(rng.randrange(count)), rng.randrange(2)]
                for k in ("positive", "negative", "model", "text", "string_a", "seed")
            },
        }
    return {"data": text_png(prompt=_api(nodes))}


def _comfy_scalar_chain(n):
    count = n // 60
    nodes = dict(
        BASE,
        p0={"class_type": "PrimitiveInt", "inputs": {"value": 5}},
        enc={"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["ckpt", 1]}},
    )
    for i in range(1, count):
        nodes[f"p{i}"] = {"class_type": "PrimitiveInt", "inputs": {"value": [f"p{i - 1}", 0]}}
    for i in range(0, count, 50):
        nodes[f"s{i}"] = _sampler(["enc", 0], seed=[f"p{count - 1}", 0])
    return {"data": text_png(prompt=_api(nodes))}


def _comfy_wide(n):
    inputs = {f"in{i}": ["enc", 0] for i in range(n // 16)}
    nodes = dict(
        BASE,
        enc={"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["ckpt", 1]}},
        wide={"class_type": "ConditioningCombine", "inputs": inputs},
    )
    nodes["s"] = _sampler(["wide", 0], ["wide", 0])
    return {"data": text_png(prompt=_api(nodes))}


def _workflow(nodes, links, **extra):
    return json.dumps({"nodes": nodes, "links": links, **extra})


def _workflow_reroute_chain(n):
    count = n // 200
    nodes = [
        {
            "id": 1,
            "type": "CLIPTextEncode",
            "widgets_values": ["a red triangle"],
            "inputs": [],
            "outputs": [{"type": "CONDITIONING"}],
        }
    ]
    links = []
    for i in range(2, count):
        nodes.append(
            {
                "id": i,
                "type": "Reroute",
                "inputs": [{"name": "", "type": "*", "link": i - 1}],
                "outputs": [{"type": "*"}],
            }
        )
        links.append([i - 1, i - 1, 0, i, 0, "*"])
    readers = []
    for j in range(count):  # every reader reads the far end of the chain
        link_id = 10**6 + j
        readers.append(
            {
                "id": 10**6 + j,
                "type": "KSampler",
                "widgets_values": [1, "fixed", 20, 7, "euler", "normal", 1],
                "inputs": [{"name": "positive", "type": "CONDITIONING", "link": link_id}],
            }
        )
        links.append([link_id, count - 1, 0, 10**6 + j, 0, "CONDITIONING"])
    return {"data": text_png(workflow=_workflow(nodes + readers, links))}


def _workflow_bypass_fanout(n):
    width = n // 120
    bypass = {
        "id": 1,
        "type": "LoraLoader",
        "mode": 4,
        "inputs": [{"name": f"i{k}", "type": f"T{k}", "link": 1} for k in range(width)],
        "outputs": [{"type": f"T{k}"} for k in range(width)],
    }
    nodes = [{"id": 0, "type": "CLIPTextEncode", "widgets_values": ["a"], "inputs": []}, bypass]
    links = [[1, 0, 0, 1, 0, "T0"]]
    for k in range(width):
        nodes.append(
            {"id": 100 + k, "type": "CLIPTextEncode", "inputs": [{"name": "clip", "type": f"T{k}", "link": 1000 + k}]}
        )
        links.append([1000 + k, 1, k, 100 + k, 0, f"T{k}"])
    return {"data": text_png(workflow=_workflow(nodes, links))}


def _invokeai_graph(n):
    count = n // 140
    nodes = {"core": {"type": "core_metadata", **{f"f{i}": None for i in range(count)}}}
    edges = []
    for i in range(count):
        nodes[f"v{i}"] = {"type": "string", "value": f"x{i}"}
        edges.append(
            {"source": {"node_id": f"v{i}", "field": "value"}, "destination": {"node_id": "core", "field": f"f{i}"}}
        )
    return {"data": text_png(invokeai_graph=json.dumps({"nodes": nodes, "edges": edges}))}


HOSTILE = {
    "a1111 unclosed brackets": lambda n: {"data": text_png(parameters="a\nSteps: 20, " + "Key: [, " * (n // 8))},
    "a1111 unclosed quotes": lambda n: {"data": text_png(parameters="a\nSteps: 20, " + 'K: "x, ' * (n // 7))},
    "a1111 deep closed brackets": lambda n: {
        "data": text_png(parameters="a\nSteps: 2, Hashes: " + "[" * (n // 2) + "]" * (n // 2))
    },
    "a1111 parameter lines": lambda n: {"data": text_png(parameters="Steps: 1, Sampler: x, Seed: 2\n" * (n // 30))},
    "a1111 template lines": lambda n: {
        "data": text_png(parameters="Steps: 1, Seed: 2, Size: 1x1\nTemplate: x\n" * (n // 40))
    },
    "a1111 unclosed lora tag": lambda n: {"data": text_png(parameters="<lora:" + "a" * n + "\nSteps: 1")},
    "a1111 many unclosed lora tags": lambda n: {"data": text_png(parameters="<lora:a" * (n // 7) + "\nSteps: 1")},
    "a1111 lora tags": lambda n: {"data": text_png(parameters="<lora:a:1>" * (n // 10) + "\nSteps: 1")},
    "a1111 lora hashes": lambda n: {
        "data": text_png(
            parameters='x\nSteps: 1, Lora hashes: "' + ", ".join(f"l{i}: {i:x}" for i in range(n // 12)) + '"'
        )
    },
    "a1111 key runs": lambda n: {"data": text_png(parameters="Steps: 1, " + "a (b) c-d " * (n // 10))},
    "a1111 negative lines": lambda n: {"data": text_png(parameters="Negative prompt: x\n" * (n // 19) + "Steps: 1")},
    "comfyui deep chain": _comfy_chain,
    "comfyui ring": _comfy_ring,
    "comfyui random links": _comfy_random_links,
    "comfyui scalar chains": _comfy_scalar_chain,
    "comfyui wide node": _comfy_wide,
    "comfyui workflow reroute chain": _workflow_reroute_chain,
    "comfyui workflow bypass fan-out": _workflow_bypass_fanout,
    "invokeai dream spaces": lambda n: {"data": text_png(Dream="x" + " " * n + "y -s 5")},
    "invokeai dream switches": lambda n: {"data": text_png(Dream="x " + "-s '5 " * (n // 6))},
    "invokeai graph fields": _invokeai_graph,
    "invokeai brackets": lambda n: {
        "data": text_png(**{"sd-metadata": json.dumps({"image": {"prompt": "[" * n, "seed": 1}})})
    },
    "midjourney flags": lambda n: {"data": text_png(Description="a " + "--ar 1 " * (n // 7))},
    "midjourney url": lambda n: {"data": text_png(Description="https://" + "a" * n + " --v 6")},
    "xmp open tags": lambda n: {"data": webp((b"XMP ", b"<dc:description>" * (n // 16)))},
    "xmp unclosed tags": lambda n: {"data": webp((b"XMP ", b"<dc:description" * (n // 15)))},
    "xmp unclosed items": lambda n: {"data": webp((b"XMP ", b"<dc:description><rdf:li>" * (n // 24)))},
    "xmp attributes": lambda n: {"data": webp((b"XMP ", b'dc:description="' * (n // 16)))},
    "fooocus lora string": lambda n: {
        "data": text_png(parameters=json.dumps({"software": "RuinedFooocus", "Prompt": "a", "loras": "<a:" * (n // 3)}))
    },
    "novelai characters": lambda n: {
        "data": text_png(
            Software="NovelAI",
            Comment=json.dumps(
                {
                    "uc": "x",
                    "v4_prompt": {
                        "caption": {
                            "base_caption": "b" * (n // 2),
                            "char_captions": [{"char_caption": "c"} for _ in range(n // 40)],
                        }
                    },
                }
            ),
        )
    },
    "swarmui models": lambda n: {
        "data": text_png(
            parameters=json.dumps(
                {
                    "sui_image_params": {"prompt": "a", "loras": ["l"] * (n // 8)},
                    "sui_models": [{"name": f"m{i}", "param": "loras"} for i in range(n // 30)],
                }
            )
        )
    },
    "flat resources": lambda n: {
        "data": b"",
        "sidecars": [
            (
                "a.json",
                json.dumps(
                    {"prompt": "a", "resources": [{"name": f"n{i % 50}", "weight": 1} for i in range(n // 26)]}
                ).encode(),
            )
        ],
    },
    # (a quarter of the size: YAML over 128 KiB is not parsed at all)
    "sidecar yaml": lambda n: {
        "data": b"",
        "sidecars": [("a.yaml", ("prompt: a\n" + "".join(f"k{i}: v\n" for i in range(n // 32))).encode())],
    },
    "sidecar text": lambda n: {"data": b"", "sidecars": [("a.txt", b"a, " * (n // 3))]},
    "manifest cell": lambda n: {"data": b"", "fields": {"prompt": "p, " * (n // 3), "seed": 1}},
    "deep json prompt": lambda n: {"data": text_png(prompt="[" * n)},
    "deep json object": lambda n: {"data": text_png(workflow='{"a":' * (n // 5))},
    "json brackets": lambda n: {"data": text_png(workflow="[]" * (n // 2))},
    "mojibake": lambda n: {"data": png(chunk(b"tEXt", b"parameters\x00" + "\u00e9".encode() * (n // 2)))},
    "jpeg comments": lambda n: {"data": jpeg(*((0xFE, b"c" * 200) for _ in range(n // 204)))},
    "exif tags": lambda n: {
        "data": jpeg((0xE1, b"Exif\x00\x00" + tiff_with(0x010E, 2, b"Steps: 1, " * (min(n, 60000) // 10))))
    },
    "png tiny chunks": lambda n: {"data": png(*(chunk(b"tEXt", b"k\x00v") for _ in range(n // 15)))},
}


def _cpu(kwargs) -> float:
    started = time.thread_time()
    result = extract(**kwargs, cpu_budget_s=120)
    elapsed = time.thread_time() - started
    assert not any("stopped" in e or "parser failed" in e or "extraction failed" in e for e in result.errors), (
        result.errors[:3]
    )
    return elapsed


@pytest.mark.parametrize("name", list(HOSTILE))
def test_each_parser_grows_about_linearly_on_hostile_text(name):
    small, large = HOSTILE[name](50_000), HOSTILE[name](200_000)
    for attempt in range(3):  # a shared CPU is noisy: the best of a few tries
        times = [_cpu(small), _cpu(large)]
        if attempt == 0:
            best_small, best_large = times
        else:
            best_small, best_large = min(best_small, times[0]), min(best_large, times[1])
        # linear growth is 4x, quadratic 16x; below 30 ms differences are noise
        if best_large < 0.03 or best_large < 8 * max(best_small, 0.002):
            break
    assert best_large < 1.5, f"{name}: {best_large:.3f} s for 200 KB"
    assert best_large < 0.03 or best_large < 8 * max(best_small, 0.002), (
        f"{name}: {best_small:.4f} s -> {best_large:.4f} s"
    )


def test_a1111_96_kb_of_unclosed_brackets_is_fast():
    text = "a red triangle\nSteps: 20, " + "Key: [, " * 12000  # 96 KB; took 69 s, quadratic
    started = time.thread_time()
    result = extract(text_png(parameters=text), cpu_budget_s=120)
    assert time.thread_time() - started < 0.5
    assert result.best.steps == 20


# --- 2b. the per-file CPU budget -----------------------------------------------------------


class _Spinner:
    """A parser that never finishes: with cooperative checks (``limits.tick``) or without."""

    name = "spinner"

    def __init__(self, cooperative: bool, pattern: bool = False):
        self.cooperative, self.pattern = cooperative, pattern

    def parse(self, pieces) -> GenerationMetadata | None:
        if self.pattern:  # a catastrophic regular expression running in C
            import re

            re.match(r"(a+)+b", "a" * 60)
        while True:
            if self.cooperative:
                limits.tick()


def _with_parser(monkeypatch, parser):
    import audit.meta as meta

    monkeypatch.setattr(meta, "PARSERS", (*PARSERS[:-1], parser, PARSERS[-1]))


def test_budget_stops_a_reading_and_keeps_what_was_found(monkeypatch):
    _with_parser(monkeypatch, _Spinner(cooperative=True))
    data = text_png(parameters="a red triangle\nSteps: 20, Seed: 4")
    started = time.monotonic()
    result = extract(data, cpu_budget_s=0.3)
    assert time.monotonic() - started < 5
    assert "metadata reading stopped: exceeded the 0.3 s budget" in result.errors
    assert result.best.prompt == "a red triangle"  # parsers before the stop still count
    assert [p.location for p in result.raw] == ["png:iTXt:parameters"]


def test_budget_stops_uncooperative_code_on_the_main_thread_by_a_timer(monkeypatch):
    assert threading.current_thread() is threading.main_thread()
    _with_parser(monkeypatch, _Spinner(cooperative=False))
    result = extract(text_png(parameters="Steps: 2"), cpu_budget_s=0.2)
    assert "metadata reading stopped: exceeded the 0.2 s budget" in result.errors
    assert signal.getsignal(signal.SIGPROF) == signal.SIG_DFL and signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_budget_interrupts_a_long_regular_expression_search(monkeypatch):
    # Python 3.11's re engine checks for signals while it matches: the timer stops it too
    _with_parser(monkeypatch, _Spinner(cooperative=False, pattern=True))
    started = time.monotonic()
    result = extract(text_png(parameters="Steps: 2"), cpu_budget_s=0.2)
    assert time.monotonic() - started < 10
    assert "metadata reading stopped: exceeded the 0.2 s budget" in result.errors


def test_budget_stops_a_reading_in_a_thread(monkeypatch):
    _with_parser(monkeypatch, _Spinner(cooperative=True))
    results = []
    worker = threading.Thread(target=lambda: results.append(extract(text_png(parameters="Steps: 2"), cpu_budget_s=0.2)))
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive()
    assert "metadata reading stopped: exceeded the 0.2 s budget" in results[0].errors


def test_hostile_but_linear_input_past_the_budget_is_stopped_and_said():
    text = json.dumps([[[0]] * 2000] * 200)  # valid JSON, much to parse, tiny budget
    result = extract(text_png(workflow=text, prompt=text + " "), cpu_budget_s=0.001)
    assert "metadata reading stopped: exceeded the 0.001 s budget" in result.errors


# --- 3. depth --------------------------------------------------------------------------

DEEP_ARRAY = "[" * DEEP + "]" * DEEP
DEEP_OBJECT = '{"a":' * DEEP + "1" + "}" * DEEP


@pytest.mark.parametrize(
    "key",
    [
        "prompt",
        "workflow",
        "invokeai_metadata",
        "invokeai_graph",
        "invokeai_workflow",
        "sd-metadata",
        "parameters",
        "parameters-json",
        "smproj",
        "extraMetadata",
        "generation_data",
        "Comment",
        "comment",
    ],
)
def test_json_nested_100000_levels_is_refused_with_an_error_in_every_key(key):
    for deep in (DEEP_ARRAY, DEEP_OBJECT):
        result = extract(text_png(**{key: deep}))
        assert any(f"png:iTXt:{key}: JSON nested" in e for e in result.errors), (key, result.errors)
        assert not any("failed" in e for e in result.errors), result.errors


def test_deep_json_in_exif_sidecars_manifest_and_nested_pieces_is_recorded():
    comment = b"ASCII\x00\x00\x00" + DEEP_OBJECT.encode()[:60000]
    result = extract(jpeg((0xE1, b"Exif\x00\x00" + tiff_with(0x9286, 7, comment))))
    assert not any("failed" in e for e in result.errors)
    sidecars = [("a.json", DEEP_ARRAY.encode()), ("b.yaml", b"[" * DEEP), ("c.txt", DEEP_OBJECT.encode())]
    result = extract(b"", sidecars=sidecars, fields={"metadata": DEEP_OBJECT})
    assert any(e.startswith("sidecar:a.json: JSON nested") for e in result.errors), result.errors
    assert any(e.startswith("sidecar b.yaml") for e in result.errors), result.errors
    assert any(e.startswith("sidecar:c.txt: JSON nested") for e in result.errors), result.errors
    assert not any("failed" in e for e in result.errors), result.errors
    wrapper = json.dumps({"prompt": "x", "workflow": "placeholder"}).replace('"placeholder"', DEEP_ARRAY[: 2 * 300])
    result = extract(text_png(Comment=wrapper, parameters="Steps: 3, Hashes: " + DEEP_ARRAY))
    assert any("JSON nested" in e for e in result.errors)
    assert result.best.steps == 3  # the infotext still reads; its too-deep value is kept as text


# --- 4. a crawl of bomb files -------------------------------------------------------------


def test_crawl_of_bomb_pngs_exits_0_with_a_small_catalog(tmp_path, bomb):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "many.png").write_bytes(png(*(ztxt(b"workflow%d" % i, bomb) for i in range(20))))
    (archive / "one.png").write_bytes(png(ztxt(b"workflow", bomb)))
    index = tmp_path / "idx"
    audit_cli("crawl", archive, "--index", index, "--quiet")
    stored = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
    assert stored < 24 * MiB, stored  # was 60 MB for the small file, and no commit at all for the other
    with sqlite3.connect(index / "catalog.sqlite") as db:
        rows = db.execute("SELECT i.metadata_errors, length(i.raw_metadata) FROM items i").fetchall()
    assert len(rows) == 2
    for errors, raw_length in rows:
        assert "truncated: kept 1048576 of 62914560 characters" in errors
        assert raw_length <= limits.MAX_FILE_CHARS + 64 * 1024


def test_crawled_bomb_rows_have_their_pixels_audited(tmp_path, bomb):
    """Needs PNG decoding to ignore text chunks (the decode path's own change): PIL refuses a
    text chunk that inflates past 1 MB, so without it these rows are decode errors."""
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "one.png").write_bytes(png(ztxt(b"workflow", bomb)))
    index = tmp_path / "idx"
    audit_cli("crawl", archive, "--index", index, "--quiet")
    with sqlite3.connect(index / "catalog.sqlite") as db:
        status, error, pdq = db.execute(
            "SELECT l.status, l.error, i.pdq FROM locations l JOIN items i USING (item_id)"
        ).fetchone()
    assert (status, error) == ("ok", None) and pdq


def test_bomb_payload_fixture_is_what_it_says(bomb):
    assert len(zlib.decompress(bomb)) == 60 * MiB and len(bomb) < 64 * 1024
