"""Seeded fuzzing of the metadata reader and of the whole catalog row.

Small valid files (PNG with A1111 parameters and ComfyUI prompt/workflow chunks, JPEG with
EXIF UserComment, XMP and COM, WebP with EXIF/XMP chunks, AVIF-like ISOBMFF, TIFF, a PNG
with stealth alpha data) are mutated byte-wise and structurally (bit flips, insertions,
deletions, truncations, duplicated and reordered chunks, lying and huge lengths, CRC
garbage); generator records (ComfyUI API prompt and UI workflow, InvokeAI, NovelAI,
Fooocus, SwarmUI, Stability Matrix, Civitai, TensorArt) are mutated as JSON (wrong types,
missing keys, links into cycles and to nowhere, huge numbers, NaN, deep nesting, unicode
oddities). Each case goes through ``audit.meta.extract`` and through
``audit.crawler.worker.describe`` (decode, hashes and metadata: the row the catalog keeps).

Every case must: raise nothing, give a row SQLite stores as is (each value ``None``, an
int of 64 bits, a float or UTF-8-encodable text; the JSON columns valid JSON), and take
bounded time.
"""

from __future__ import annotations

import copy
import io
import json
import random
import sqlite3
import struct
import time
import traceback
import zlib

import numpy as np
from PIL import Image

from audit.crawler.worker import describe
from audit.meta import extract

SEED = 20240611
CASES_PER_FILE = 260
CASES_PER_RECORD = 170
CASE_CPU_LIMIT_S = 3.0  # the reader's own budget is 2 s; decoding a 64 px image is milliseconds


# --- seed files -----------------------------------------------------------------------


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def _png(text_chunks: list[bytes], image: Image.Image | None = None) -> bytes:
    buffer = io.BytesIO()
    (image or Image.new("RGB", (8, 8), (220, 30, 30))).save(buffer, "PNG")
    data = buffer.getvalue()
    idat = data.index(b"IDAT") - 4
    iend = data.rindex(b"IEND") - 4
    half = len(text_chunks) // 2
    return data[:idat] + b"".join(text_chunks[:half]) + data[idat:iend] + b"".join(text_chunks[half:]) + data[iend:]


def _itxt(key: str, text: str, compressed: bool = False) -> bytes:
    body = text.encode("utf-8", "surrogatepass")
    if compressed:
        return _chunk(b"iTXt", key.encode() + b"\x00\x01\x00\x00\x00" + zlib.compress(body))
    return _chunk(b"iTXt", key.encode() + b"\x00\x00\x00\x00\x00" + body)


def _text(key: str, text: str) -> bytes:
    return _chunk(b"tEXt", key.encode() + b"\x00" + text.encode("latin-1", "replace"))


def _ztxt(key: str, text: str) -> bytes:
    return _chunk(b"zTXt", key.encode() + b"\x00\x00" + zlib.compress(text.encode("latin-1", "replace")))


INFOTEXT = (
    "a red triangle <lora:shape:0.8> on grey\nNegative prompt: blue square\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 8x8, Model hash: abc123, Model: toy, "
    'Lora hashes: "shape: 1f2e", Hashes: {"model": "abc123", "lora:shape": "1f2e"}, '
    'Civitai resources: [{"type": "lora", "modelName": "shape", "weight": 0.8}], Version: f1.0'
)

COMFY_API = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "toy.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": ["10", 0], "clip": ["11", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "10": {"class_type": "StringConcatenate", "inputs": {"string_a": "a red", "string_b": ["12", 0], "delimiter": " "}},
    "11": {
        "class_type": "LoraLoader",
        "inputs": {
            "lora_name": "shape.safetensors",
            "strength_model": 0.8,
            "strength_clip": 0.8,
            "model": ["4", 0],
            "clip": ["4", 1],
        },
    },
    "12": {"class_type": "PrimitiveString", "inputs": {"value": "triangle"}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 42,
            "steps": 20,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["11", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "8": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 43,
            "steps": 10,
            "cfg": 5.0,
            "sampler_name": "euler",
            "scheduler": "karras",
            "denoise": 0.5,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["3", 0],
        },
    },
}


def _wnode(node_id, node_type, widgets=None, inputs=(), outputs=1, mode=0):
    return {
        "id": node_id,
        "type": node_type,
        "mode": mode,
        "widgets_values": widgets,
        "inputs": [{"name": name, "type": "*", "link": link} for name, link in inputs],
        "outputs": [{"name": f"out{i}", "type": "*", "links": []} for i in range(outputs)],
    }


COMFY_UI = {
    "nodes": [
        _wnode(1, "CheckpointLoaderSimple", ["toy.safetensors"], outputs=3),
        _wnode(2, "CLIPTextEncode", ["a red triangle"], inputs=[("clip", 1)]),
        _wnode(3, "Reroute", None, inputs=[("", 2)]),
        _wnode(4, "LoraLoader", ["shape.safetensors", 1.0, 1.0], inputs=[("model", 4), ("clip", 5)], outputs=2, mode=4),
        _wnode(5, "sub-1", None, inputs=[("clip", 6)], outputs=1),
        _wnode(
            6,
            "KSampler",
            [42, "fixed", 20, 7.0, "euler", "normal", 1.0],
            inputs=[("model", 7), ("positive", 3), ("negative", 8)],
        ),
        _wnode(7, "PrimitiveNode", [42]),
        _wnode(8, "workflow>pair", ["a blue square"], inputs=[("clip", 9)]),
    ],
    "links": [
        [1, 1, 1, 2, 0, "CLIP"],
        [2, 2, 0, 3, 0, "CONDITIONING"],
        [3, 3, 0, 6, 1, "CONDITIONING"],
        [4, 1, 0, 4, 0, "MODEL"],
        [5, 1, 1, 4, 1, "CLIP"],
        [6, 4, 1, 5, 0, "CLIP"],
        [7, 4, 0, 6, 0, "MODEL"],
        [8, 5, 0, 6, 2, "CONDITIONING"],
        [9, 1, 1, 8, 0, "CLIP"],
    ],
    "definitions": {
        "subgraphs": [
            {
                "id": "sub-1",
                "inputs": [{"name": "clip", "type": "CLIP", "linkIds": [1]}],
                "outputs": [{"name": "c", "type": "CONDITIONING", "linkIds": [2]}],
                "nodes": [_wnode(1, "CLIPTextEncode", ["grey fog"], inputs=[("clip", 1)])],
                "links": [
                    {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0},
                    {"id": 2, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0},
                ],
            }
        ]
    },
    "extra": {
        "groupNodes": {
            "pair": {
                "nodes": [
                    {
                        "type": "CLIPTextEncode",
                        "inputs": [{"name": "clip", "type": "CLIP", "link": None}],
                        "outputs": [{"type": "C"}],
                        "widgets_values": ["x"],
                    }
                ],
                "links": [],
                "external": [[0, 0, "C"]],
            }
        }
    },
}

INVOKEAI_V3 = {
    "generation_mode": "txt2img",
    "positive_prompt": "a red triangle",
    "negative_prompt": "blurry",
    "seed": 7,
    "steps": 20,
    "cfg_scale": 6.5,
    "scheduler": "euler",
    "width": 8,
    "height": 8,
    "model": {"key": "k", "hash": "blake3:aa", "name": "toy", "base": "sd-1", "type": "main"},
    "loras": [{"model": {"key": "l", "hash": "blake3:bb", "name": "shape"}, "weight": 0.7}],
}
INVOKEAI_GRAPH = {
    "nodes": {
        "core": {"type": "core_metadata", "seed": 1, "steps": 5},
        "p": {"type": "string", "value": "a red triangle"},
        "d": {"type": "denoise_latents", "steps": 5, "cfg_scale": 3},
    },
    "edges": [
        {"source": {"node_id": "p", "field": "value"}, "destination": {"node_id": "core", "field": "positive_prompt"}},
        {"source": {"node_id": "core", "field": "seed"}, "destination": {"node_id": "p", "field": "value"}},
    ],
}
NOVELAI = {
    "prompt": "a red triangle",
    "uc": "blurry",
    "steps": 28,
    "scale": 5,
    "seed": 9,
    "sampler": "k_euler",
    "noise_schedule": "karras",
    "v4_prompt": {
        "caption": {
            "base_caption": "a red triangle",
            "char_captions": [{"char_caption": "a circle", "centers": [{"x": 0.5}]}],
        }
    },
}
FOOOCUS = {
    "prompt": "a red triangle",
    "negative_prompt": "",
    "styles": "['Fooocus V2']",
    "performance": "Speed",
    "steps": 30,
    "resolution": "(8, 8)",
    "guidance_scale": 4,
    "sharpness": 2,
    "base_model": "toy.safetensors",
    "sampler": "dpmpp_2m_sde_gpu",
    "scheduler": "karras",
    "seed": "1",
    "loras": [["shape.safetensors", 0.5, "ab"]],
    "lora_combined_1": "shape.safetensors : 0.5",
    "full_prompt": ["a red triangle, sharp"],
    "version": "Fooocus v2.5.0",
}
SWARM = {
    "sui_image_params": {
        "prompt": "a red triangle",
        "negativeprompt": "blurry",
        "seed": 3,
        "steps": 20,
        "cfgscale": 7,
        "model": "toy",
        "loras": ["shape"],
        "loraweights": ["0.6"],
    },
    "sui_models": [{"name": "toy.safetensors", "param": "model", "hash": "0xab"}],
    "sui_extra_data": {"date": "2024"},
}
STABILITY = {
    "PositivePrompt": "a red triangle",
    "NegativePrompt": "blurry",
    "Seed": 5,
    "Steps": 20,
    "CfgScale": 7,
    "Sampler": "euler",
    "ModelName": "toy",
    "ModelHash": "abc",
    "Width": 8,
    "Height": 8,
}
CIVITAI = {
    "prompt": "a red triangle",
    "negativePrompt": "blurry",
    "cfgScale": 5,
    "sampler": "Euler",
    "steps": 20,
    "seed": 8,
    "baseModel": "SD 1.5",
    "resources": [{"modelVersionId": 123, "strength": 0.8}],
}
TENSORART = {
    "prompt": "a red triangle",
    "negativePrompt": "blurry",
    "seed": 1,
    "steps": 20,
    "cfgScale": 7,
    "samplerName": "euler",
    "baseModel": {"modelFileName": "toy.safetensors", "hash": "ab"},
    "models": [{"modelFileName": "shape.safetensors", "type": "LORA", "weight": 0.5}],
}

# (pieces around the record, the record's key, the record)
RECORDS = {
    "comfyui api": ([("workflow", json.dumps(COMFY_UI))], "prompt", COMFY_API),
    "comfyui ui": ([], "workflow", COMFY_UI),
    "invokeai metadata": ([("invokeai_graph", json.dumps(INVOKEAI_GRAPH))], "invokeai_metadata", INVOKEAI_V3),
    "invokeai graph": ([], "invokeai_graph", INVOKEAI_GRAPH),
    "novelai": (
        [("Software", "NovelAI"), ("Source", "NovelAI Diffusion V4 C02D4F98"), ("Description", "a red triangle")],
        "Comment",
        NOVELAI,
    ),
    "fooocus": ([("fooocus_scheme", "fooocus")], "parameters", FOOOCUS),
    "swarmui": ([], "parameters", SWARM),
    "stability matrix": ([("smproj", json.dumps({"State": {"Sampler": {"Steps": 3}}}))], "parameters-json", STABILITY),
    "civitai": ([("prompt", json.dumps(COMFY_API))], "extraMetadata", CIVITAI),
    "tensorart": ([], "generation_data", TENSORART),
}


def _stealth_image() -> Image.Image:
    payload = INFOTEXT.encode()
    bits = np.unpackbits(
        np.frombuffer(b"stealth_pnginfo" + struct.pack(">I", len(payload) * 8) + payload, dtype=np.uint8)
    )
    size = 64
    stream = np.zeros(size * size, dtype=np.uint8)
    stream[: len(bits)] = bits
    pixels = np.full((size, size, 4), 200, dtype=np.uint8)
    pixels[:, :, 3] = (pixels[:, :, 3] & 0xFE) | stream.reshape(size, size).T
    return Image.fromarray(pixels, "RGBA")


def _tiff(entries: list[tuple[int, int, bytes]]) -> bytes:
    head = b"II*\x00" + struct.pack("<I", 8)
    table, blob = struct.pack("<H", len(entries)), b""
    data_at = 8 + 2 + 12 * len(entries) + 4
    for tag, typ, value in entries:
        table += struct.pack("<HHII", tag, typ, len(value), data_at + len(blob))
        blob += value
    return head + table + struct.pack("<I", 0) + blob


def _exif() -> bytes:
    return _tiff(
        [
            (0x010F, 2, b"Prompt: " + json.dumps(COMFY_API).encode() + b"\x00"),
            (0x0131, 2, b"Fooocus v2\x00"),
            (0x9286, 7, b"UNICODE\x00" + INFOTEXT.encode("utf-16-be")),
            (0x9C9C, 1, "a red triangle".encode("utf-16-le")),
        ]
    )


XMP = (
    b'<x:xmpmeta><rdf:RDF><rdf:Description dc:description="a red triangle --ar 1:1 --v 6">'
    b'<exif:UserComment><rdf:Alt><rdf:li xml:lang="x-default">Steps: 5, Seed: 1</rdf:li></rdf:Alt></exif:UserComment>'
    b"</rdf:Description></rdf:RDF></x:xmpmeta>"
)


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 180, 60)).save(buffer, "JPEG")
    data = buffer.getvalue()
    segments = [
        (0xE1, b"Exif\x00\x00" + _exif()),
        (0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + XMP),
        (0xFE, b"a red triangle"),
    ]
    return data[:2] + b"".join(bytes([0xFF, m]) + struct.pack(">H", len(b) + 2) + b for m, b in segments) + data[2:]


def _webp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8), (40, 70, 220, 255)).save(
        buffer, "WEBP", lossless=True, exif=b"Exif\x00\x00" + _exif(), xmp=XMP
    )
    return buffer.getvalue()


def _avif() -> bytes:
    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + kind + body

    payload = b"\x00\x00\x00\x00" + _exif()
    infe = box(b"infe", b"\x02\x00\x00\x00" + struct.pack(">HH", 1, 0) + b"Exif\x00")
    infe2 = box(b"infe", b"\x02\x00\x00\x00" + struct.pack(">HH", 2, 0) + b"mime" + b"x\x00application/rdf+xml\x00")
    iinf = box(b"iinf", b"\x00\x00\x00\x00" + struct.pack(">H", 2) + infe + infe2)
    ftyp = box(b"ftyp", b"avif\x00\x00\x00\x00mif1avif")

    def meta(at: int) -> bytes:
        items = (
            struct.pack(">HHH", 1, 0, 1)
            + struct.pack(">II", at, len(payload))
            + struct.pack(">HHH", 2, 0, 1)
            + struct.pack(">II", at + len(payload), len(XMP))
        )
        iloc = box(b"iloc", b"\x00\x00\x00\x00" + bytes([0x44, 0x00]) + struct.pack(">H", 2) + items)
        return box(b"meta", b"\x00\x00\x00\x00" + iinf + iloc)

    head = ftyp + meta(0)
    return ftyp + meta(len(head) + 8) + box(b"mdat", payload + XMP)


def seed_files() -> dict[str, bytes]:
    return {
        "png a1111": _png([_text("parameters", INFOTEXT), _ztxt("comment", "a note")]),
        "png comfyui": _png(
            [_itxt("prompt", json.dumps(COMFY_API)), _itxt("workflow", json.dumps(COMFY_UI), compressed=True)]
        ),
        "png stealth": _png([], _stealth_image()),
        "jpeg": _jpeg(),
        "webp": _webp(),
        "avif": _avif(),
        "tiff": _tiff([(0x010E, 2, INFOTEXT.encode() + b"\x00")]),
    }


# --- byte mutations ---------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[bytes]:
    """The raw chunks (length, type, body, CRC) of a PNG, as written."""
    out, pos = [], 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        out.append(data[pos : pos + 12 + length])
        pos += 12 + length
    return out


def _segments(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """JPEG: (SOI, marker segments before the scan, the rest)."""
    pos, out = 2, []
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] not in (0xDA, 0xD9):
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        out.append(data[pos : pos + 2 + length])
        pos += 2 + length
    return data[:2], out, data[pos:]


def _riff_chunks(data: bytes) -> list[bytes]:
    out, pos = [], 12
    while pos + 8 <= len(data):
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        out.append(data[pos : pos + 8 + size + (size & 1)])
        pos += 8 + size + (size & 1)
    return out


HUGE = (0, 1, 7, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0xFFFFFFF0)


def _structural(rng: random.Random, name: str, data: bytes) -> bytes:
    if name.startswith("png"):
        chunks = _png_chunks(data)
        if not chunks:
            return data
        i = rng.randrange(len(chunks))
        op = rng.randrange(6)
        if op == 0:  # duplicate
            chunks.insert(rng.randrange(len(chunks) + 1), chunks[i])
        elif op == 1:  # reorder
            j = rng.randrange(len(chunks))
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif op == 2:  # the length lies
            chunks[i] = (
                struct.pack(">I", rng.choice(HUGE + (len(chunks[i]) - 11, max(0, len(chunks[i]) - 13)))) + chunks[i][4:]
            )
        elif op == 3:  # CRC garbage
            chunks[i] = chunks[i][:-4] + bytes(rng.randrange(256) for _ in range(4))
        elif op == 4:  # drop
            del chunks[i]
        else:  # a text chunk with a hostile body
            body = rng.choice(
                [
                    b"",
                    b"\x00",
                    b"k" * 90,
                    b"k\x00\x01",
                    b"k\x00\x01\x00",
                    b"k\x00\x00" + b"\x78\x9c" + b"\xff" * 20,
                    b"k\x00\x01\x00\x00\x00" + zlib.compress(b"[" * 5000),
                ]
            )
            chunks.insert(i, _chunk(rng.choice([b"tEXt", b"zTXt", b"iTXt"]), body))
        return data[:8] + b"".join(chunks)
    if name == "jpeg":
        head, segments, rest = _segments(data)
        if not segments:
            return data
        i = rng.randrange(len(segments))
        op = rng.randrange(4)
        if op == 0:
            segments.insert(i, segments[i])
        elif op == 1:
            segments[i] = segments[i][:2] + struct.pack(">H", rng.randrange(0x10000)) + segments[i][4:]
        elif op == 2:
            del segments[i]
        else:
            j = rng.randrange(len(segments))
            segments[i], segments[j] = segments[j], segments[i]
        return head + b"".join(segments) + rest
    if name == "webp":
        chunks = _riff_chunks(data)
        i = rng.randrange(len(chunks))
        op = rng.randrange(4)
        if op == 0:
            chunks.insert(i, chunks[i])
        elif op == 1:
            chunks[i] = chunks[i][:4] + struct.pack("<I", rng.choice(HUGE)) + chunks[i][8:]
        elif op == 2:
            del chunks[i]
        else:
            return data[:4] + struct.pack("<I", rng.choice(HUGE)) + data[8:]
        body = b"WEBP" + b"".join(chunks)
        return b"RIFF" + struct.pack("<I", len(body)) + body
    # ISOBMFF and TIFF: overwrite a 4-byte field (box sizes, offsets, counts) with a hostile number
    pos = rng.randrange(0, max(1, len(data) - 4))
    return (
        data[:pos]
        + struct.pack(">I" if name == "avif" else "<I", rng.choice(HUGE + (rng.randrange(64),)))
        + data[pos + 4 :]
    )


def mutate_bytes(rng: random.Random, name: str, data: bytes) -> bytes:
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(6)
        if op == 0 and data:  # bit flips
            buffer = bytearray(data)
            for _ in range(rng.randrange(1, 9)):
                buffer[rng.randrange(len(buffer))] ^= 1 << rng.randrange(8)
            data = bytes(buffer)
        elif op == 1:  # insertion
            pos = rng.randrange(len(data) + 1)
            data = data[:pos] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 32))) + data[pos:]
        elif op == 2 and data:  # deletion
            pos = rng.randrange(len(data))
            data = data[:pos] + data[pos + rng.randrange(1, 64) :]
        elif op == 3:  # truncation
            data = data[: rng.randrange(len(data) + 1)]
        else:
            data = _structural(rng, name, data)
    return data


# --- JSON mutations ---------------------------------------------------------------------

_DEEP_MARK = "\x00deep:"


def _deep(depth: int) -> str:
    """A marker that ``_with_deep`` turns into JSON nested ``depth`` levels (built as text:
    Python objects that deep cannot be copied or serialised)."""
    return f"{_DEEP_MARK}{depth}"


def _with_deep(text: str) -> str:
    for depth in (10, 50, 200, 255, 300, 400):
        marker = json.dumps(_deep(depth))
        text = text.replace(marker, "[" * depth + "0" + "]" * depth)
    return text


def _hostile_value(rng: random.Random, node_ids: list[str]):
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            2**64,
            -(2**63) - 1,
            10**30,
            1e308,
            -0.0,
            float("nan"),
            float("inf"),
            float("-inf"),
            "",
            "x" * rng.choice((10, 5000)),
            "\u0000",
            "\ud800",
            "caf\u00e9 \u30c6",
            "\U0001f642",
            "\u202eevil",
            "Steps: 1e999",
            "1" * 30,
            "²",
            [],
            {},
            [0, 0],
            [rng.choice(node_ids) if node_ids else "1", 0],
            ["nope", 0],
            ["1", -5],
            ["1", 2**40],
            {"a": {}},
            _deep(rng.choice((10, 200, 300))),
            {"class_type": "KSampler", "inputs": {}},
            {"lora": "x", "on": True, "strength": "nan"},
        ]
    )


def _containers(value, path=()):
    """(path, container) of every dict and list in ``value``."""
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, (dict, list)):
            yield where, item
            children = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend(((*where, k), v) for k, v in children)


def mutate_record(rng: random.Random, record):
    record = copy.deepcopy(record)
    node_ids = [str(k) for k in record] if isinstance(record, dict) else []
    for _ in range(rng.choice((1, 2, 3, 5))):
        places = list(_containers(record))
        _, container = rng.choice(places)
        op = rng.randrange(7)
        keys = list(container) if isinstance(container, dict) else list(range(len(container)))
        if op == 0 and keys:  # a hostile value
            container[rng.choice(keys)] = _hostile_value(rng, node_ids)
        elif op == 1 and keys:  # a missing key / element
            del container[rng.choice(keys)]
        elif op == 2 and isinstance(container, dict):  # an unexpected key
            container[
                rng.choice(
                    [
                        "class_type",
                        "inputs",
                        "nodes",
                        "links",
                        "id",
                        "type",
                        "mode",
                        "widgets_values",
                        "positive",
                        "text",
                        "seed",
                        "\ud800",
                        "x" * 300,
                    ]
                )
            ] = _hostile_value(rng, node_ids)
        elif op == 3 and keys:  # a link into a cycle or to anywhere
            container[rng.choice(keys)] = [rng.choice(node_ids or ["1"]), rng.randrange(3)]
        elif op == 4 and keys:  # a type swapped
            key = rng.choice(keys)
            value = container[key]
            container[key] = (
                list(value.values())
                if isinstance(value, dict)
                else ({str(i): v for i, v in enumerate(value)} if isinstance(value, list) else [value])
            )
        elif op == 5 and keys:  # nested deep
            container[rng.choice(keys)] = _deep(rng.choice((50, 255, 400)))
        elif isinstance(container, list) and container and len(json.dumps(container[0])) < 2000:  # many copies
            container.extend(copy.deepcopy(container[0]) for _ in range(rng.randrange(1, 200)))
    return record


def record_file(rng: random.Random, name: str) -> bytes:
    around, key, record = RECORDS[name]
    text = _with_deep(json.dumps(mutate_record(rng, record), ensure_ascii=rng.random() < 0.5, allow_nan=True))[
        : 4 << 20
    ]
    if rng.random() < 0.1:  # cut
        text = text[: rng.randrange(len(text) + 1)]
    chunks = [_itxt(k, v) for k, v in around] + [_itxt(key, text, compressed=rng.random() < 0.3)]
    rng.shuffle(chunks)
    return _png(chunks)


# --- checking one case --------------------------------------------------------------------

ITEM_COLUMNS = (
    "item_id md5 size status error format width height frames pdq pdq_quality generator prompt negative_prompt "
    "seed steps sampler scheduler cfg_scale model model_hash resources metadata_found metadata_errors extra "
    "raw_metadata"
).split()
JSON_COLUMNS = ("resources", "metadata_found", "metadata_errors", "extra", "raw_metadata")


def _check_storable(row: dict, db: sqlite3.Connection) -> None:
    for column in JSON_COLUMNS:
        if row.get(column) is not None:
            json.loads(row[column])
    for key, value in row.items():
        assert value is None or isinstance(value, (str, int, float)), (key, type(value))
        if isinstance(value, int) and not isinstance(value, bool):
            assert -(1 << 63) <= value < (1 << 63), (key, value)
        if isinstance(value, str):
            value.encode("utf-8")
    values = [row.get(c) for c in ITEM_COLUMNS]
    db.execute(f"INSERT INTO items VALUES ({', '.join('?' * len(ITEM_COLUMNS))})", values)


def _extraction_storable(result) -> None:
    best = result.best
    for text in (best.prompt, best.negative_prompt, best.seed, best.model, best.sampler):
        if text is not None:
            text.encode("utf-8")
    json.dumps(best.extra, default=str, ensure_ascii=False).encode("utf-8")
    json.dumps([r.to_dict() for r in best.resources]).encode("utf-8")
    json.dumps([{"location": r.location, "key": r.key, "text": r.text} for r in result.raw], ensure_ascii=False).encode(
        "utf-8"
    )
    json.dumps(result.errors, ensure_ascii=False).encode("utf-8")
    assert best.steps is None or -(1 << 63) <= best.steps < (1 << 63)


def _run_cases(cases) -> tuple[int, float, list[str]]:
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE items ({', '.join(ITEM_COLUMNS)})")
    failures: list[str] = []
    started = time.monotonic()
    count = 0
    for label, data in cases:
        count += 1
        for stage, call in (("extract", lambda: extract(data)), ("describe", lambda: describe(data))):
            before = time.thread_time()
            try:
                result = call()
                if stage == "extract":
                    _extraction_storable(result)
                else:
                    _check_storable(result, db)
            except Exception:  # noqa: BLE001 - collected and reported with the recipe
                failures.append(f"{stage} {label} ({len(data)} bytes, head {data[:16]!r}):\n{traceback.format_exc()}")
            spent = time.thread_time() - before
            if spent > CASE_CPU_LIMIT_S:
                failures.append(f"{stage} {label}: {spent:.2f} s of CPU")
    return count, time.monotonic() - started, failures


def test_mutated_containers_never_raise_and_give_storable_rows():
    rng = random.Random(SEED)
    seeds = seed_files()
    cases = [
        (f"{name} seed {SEED} #{i}", mutate_bytes(rng, name, data))
        for name, data in seeds.items()
        for i in range(CASES_PER_FILE)
    ]
    cases += [(f"{name} unmutated", data) for name, data in seeds.items()]
    count, elapsed, failures = _run_cases(cases)
    print(f"\nfuzz containers: {count} cases in {elapsed:.1f} s")
    assert not failures, "\n".join(failures[:5])


def test_mutated_generator_records_never_raise_and_give_storable_rows():
    rng = random.Random(SEED + 1)
    cases = [
        (f"{name} seed {SEED + 1} #{i}", record_file(rng, name)) for name in RECORDS for i in range(CASES_PER_RECORD)
    ]
    count, elapsed, failures = _run_cases(cases)
    print(f"\nfuzz records: {count} cases in {elapsed:.1f} s")
    assert not failures, "\n".join(failures[:5])


def test_seed_files_are_read_before_mutation():
    """The fuzzer starts from files the reader understands (else it fuzzes the rejection path only)."""
    files = seed_files()
    assert extract(files["png a1111"]).best.seed == "42"
    assert extract(files["png comfyui"]).best.generator == "comfyui"
    assert extract(files["png stealth"]).best.steps == 20
    assert extract(files["jpeg"]).has_generation_metadata
    assert extract(files["webp"]).has_generation_metadata
    assert extract(files["avif"]).has_generation_metadata
    assert extract(files["tiff"]).best.seed == "42"
    for name in RECORDS:
        around, key, record = RECORDS[name]
        data = _png([_itxt(k, v) for k, v in around] + [_itxt(key, json.dumps(record))])
        assert extract(data).has_generation_metadata, name
