"""Real-person models and LoRAs: names, rules and hash lists over recorded resources.

Toy-world items carry the resources in the metadata formats generators really write
(A1111 infotext with ``Model hash`` / ``Lora hashes`` / ``<lora:...>``, a ComfyUI API graph,
Civitai's ``Civitai resources`` and on-site ``extraMetadata``); the catalog records them as
``resources``; the flag stage fires ``names:``, ``rule:`` and ``hash:`` signals from them."""

from __future__ import annotations

import json

import pytest
from audit.findings.store import signal_dicts
from PIL import PngImagePlugin

from tests.toy_world import shape_image

FULL_SHA = "7C6BAD76EB0F1E2D3C4B5A69788796A5B4C3D2E1F00112233445566778899AAB"


def _png(path, chunks: dict[str, str], colour="red", shape="circle"):
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    shape_image(colour, shape).save(path, pnginfo=info)


def _a1111(prompt: str, tail: str) -> str:
    return f"{prompt}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, {tail}"


def _comfy(lora: str, ckpt: str) -> str:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {
            "class_type": "LoraLoader",
            "inputs": {
                "lora_name": lora,
                "strength_model": 0.8,
                "strength_clip": 0.8,
                "model": ["1", 0],
                "clip": ["1", 1],
            },
        },
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["2", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["2", 1]}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 3,
                "steps": 20,
                "cfg": 7,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["2", 0],
                "positive": ["3", 0],
                "negative": ["4", 0],
                "latent_image": ["6", 0],
            },
        },
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    return json.dumps(graph)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    import audit

    root = tmp_path_factory.mktemp("resources")
    items = root / "items"
    items.mkdir()
    # A1111: innocent prompt, a person LoRA by tag and hash, a checkpoint by AutoV2 hash
    _png(
        items / "a1111.png",
        {
            "parameters": _a1111(
                "a red circle <lora:janePlaceholderV2:0.8>",
                'Model hash: 7c6bad76eb, Model: toyModel_v1, Lora hashes: "janePlaceholderV2: 0a1b2c3d4e5f"',
            )
        },
    )
    # ComfyUI: the LoRA only as a file name in a folder
    _png(
        items / "comfyui.png",
        {"prompt": _comfy("people/jane_placeholder-v2.safetensors", "toyXL.safetensors")},
        colour="blue",
    )
    # Civitai infotext: the LoRA pinned by model version id only
    civitai = [
        {"type": "checkpoint", "modelVersionId": 290640, "modelName": "Toy XL", "modelVersionName": "v6"},
        {"type": "lora", "weight": 0.7, "modelVersionId": 67890, "modelName": "Shape helper", "modelVersionName": "v1"},
    ]
    _png(
        items / "civitai.png",
        {
            "parameters": _a1111(
                "a green square",
                f"Civitai resources: {json.dumps(civitai, separators=(',', ':'))}, Civitai metadata: {{}}",
            )
        },
        colour="green",
        shape="square",
    )
    # an item with nothing real-person about it
    _png(
        items / "benign.png",
        {"parameters": _a1111("a yellow circle", "Model hash: 0123456789, Model: toyModel_v1")},
        colour="yellow",
    )
    (root / "person-loras.csv").write_text(
        "hash_type,hash,label\n"
        f"resource,{FULL_SHA},toy checkpoint by full SHA-256\n"
        "resource,0A1B2C3D4E5F,jane-placeholder LoRA (AutoV3)\n"
        "resource,urn:air:sd1:lora:civitai:12345@67890,person LoRA on Civitai\n"
    )
    policy = root / "policy.toml"
    policy.write_text("""
[policy]
name = "resources"
[[category]]
id = "real-person"
severity = "high"
[[category]]
id = "real-person-model"
severity = "high"
[[names]]
id = "persons"
names = ["Jane Placeholder"]
fields = ["prompt", "resources", "model"]
[[rule]]
id = "toy-checkpoint"
words = ["toyxl"]
fields = ["model"]
[[hashlist]]
path = "person-loras.csv"
id = "person-loras"
category = "real-person-model"
[[flag]]
category = "real-person"
any = ["names:persons"]
""")
    index = root / "index"
    audit.crawl([str(items)], index)
    with audit.open(index) as a:
        a.flag(str(policy))
        found = a.findings()
    by_file: dict[str, dict] = {}
    for row in found.iter_rows(named=True):
        name = row["uri"].rsplit("/", 1)[-1]
        for s in signal_dicts(row["signals"]):
            by_file.setdefault(name, {})[s["name"]] = s
    return by_file


def test_a1111_lora_name_and_hashes(archive):
    sigs = archive["a1111.png"]
    match = sigs["names:persons"]["detail"]["matches"][0]
    assert match["field"] == "resources" and match["resource"] == "janePlaceholderV2"
    assert match["text"] == "janePlaceholder" and match["name"] == "Jane Placeholder"
    bank = sigs["hash:person-loras"]["detail"]
    assert bank["hash_type"] == "resource"
    assert {(m["item_hash"].lower(), m["how"]) for m in bank["matches"]} == {
        ("7c6bad76eb", "prefix"),
        ("0a1b2c3d4e5f", "exact"),
    }


def test_comfyui_lora_file_name(archive):
    match = archive["comfyui.png"]["names:persons"]["detail"]["matches"][0]
    assert match["resource"] == "people/jane_placeholder-v2.safetensors" and match["text"] == "jane_placeholder"
    assert "hash:person-loras" not in archive["comfyui.png"]


def test_civitai_version_id_matches_an_air(archive):
    detail = archive["civitai.png"]["hash:person-loras"]["detail"]
    assert detail["how"] == "civitai-version" and detail["label"] == "person LoRA on Civitai"
    assert "names:persons" not in archive["civitai.png"]


def test_benign_item_has_no_finding(archive):
    assert "benign.png" not in archive


# ---------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    "value, expected",
    [
        ("7C6BAD76EB", "7c6bad76eb"),
        ("sha256:" + FULL_SHA, FULL_SHA.lower()),
        ("1D44365E", "1d44365e"),
        ("urn:air:sdxl:lora:civitai:13@14", "air:civitai:13@14"),
        ("URN:AIR:SD1:LORA:CIVITAI:13", "air:civitai:13"),
        ("urn:air:flux1:checkpoint:civitai:1@2", "air:civitai:1@2"),
        ("civitai:290640", "civitai-version:290640"),
        ("abc", None),
        ("not a hash at all", None),
        ("blake3:" + "a" * 64, None),
        (None, None),
    ],
)
def test_normalize_resource_hash(value, expected):
    from audit.policy.resources import normalize_resource_hash

    assert normalize_resource_hash(value) == expected


def _bank(rows: str):
    from audit.policy.hashlists import parse_hash_bank

    return parse_hash_bank("hash_type,hash,label\n" + rows, "t.csv")


@pytest.mark.parametrize(
    "listed, recorded, hit",
    [
        (FULL_SHA, "7c6bad76eb", True),  # AutoV2 recorded, full SHA-256 listed
        ("7C6BAD76EB", FULL_SHA.lower(), True),  # AutoV2 listed, full recorded (Stability Matrix)
        ("7c6bad76eb", "7c6bad76ec", False),
        ("0a1b2c3d4e5f", "0A1B2C3D4E5F", True),  # AutoV3, case-insensitive
        ("0a1b2c3d", "0a1b2c3d4e5f", True),  # 8 digits in common
        ("urn:air:sd1:lora:civitai:12345@67890", "urn:air:sdxl:lora:civitai:12345@67890", True),
        ("urn:air:sd1:lora:civitai:12345", "urn:air:sd1:lora:civitai:12345@1", True),  # every version
        ("urn:air:sd1:lora:civitai:12345@67890", "urn:air:sd1:lora:civitai:12345@67891", False),
        ("urn:air:sd1:lora:civitai:12345@67890", "civitai:67890", True),
        ("urn:air:sd1:lora:huggingface:12345@67890", "civitai:67890", False),
    ],
)
def test_resource_hash_matching(listed, recorded, hit):
    from audit.policy.resources import match_resource_hashes

    bank = _bank(f"resource,{listed},x\n")
    found = match_resource_hashes(bank, [{"kind": "lora", "name": "n", "hash": recorded}])
    assert bool(found) is hit


def test_bad_resource_row_names_file_and_line():
    from audit.errors import InputError

    with pytest.raises(InputError, match=r"t.csv:3: hash: a resource hash must be 8 to 64 hex digits"):
        _bank("resource,0a1b2c3d4e5f,ok\nresource,xyz,bad\n")


def test_readable_resource_names():
    from audit.policy.resources import _readable

    for name, text in [
        ("janePlaceholderV2", "jane Placeholder V 2"),
        ("loras/jane_placeholder-v2.safetensors", "jane placeholder v 2"),
        ("JANE.PLACEHOLDER", "JANE PLACEHOLDER"),
    ]:
        readable, index = _readable(name)
        assert readable == text and len(index) == len(readable)
