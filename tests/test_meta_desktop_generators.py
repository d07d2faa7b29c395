"""Desktop generators whose formats are public, each written as its own source writes it:
Easy Diffusion (sdkit ``save_dicts`` "embed": a tEXt chunk per field, or JSON in EXIF
UserComment), Draw Things (XMP with a JSON ``exif:UserComment``), Mochi Diffusion (ImageIO:
IPTC Caption/Abstract, mirrored into XMP ``dc:description``) and Fooocus-MRE (a ``Comment`` JSON).
Bad variants: damaged reprs, JSON and IPTC blocks, recorded, never a crash."""

from __future__ import annotations

import html
import io
import json
import struct

import pytest
from PIL import Image, ImageDraw
from tests.meta_fixtures import png_chunk, jpeg_with_exif, png_with_chunks, tiff

from audit.meta import extract

PROMPT = "a purple square on a white background"


def toy_jpeg() -> bytes:
    image = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(image).rectangle((8, 8, 24, 24), fill="purple")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def with_segment(jpeg: bytes, marker: int, body: bytes) -> bytes:
    return jpeg[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def xmp_packet(description: str | None = None, user_comment: str | None = None, creator: str = "Draw Things") -> str:
    """An XMP packet as Apple's ImageIO lays it out (rdf:Alt lists, x-default language)."""

    def alt(name: str, value: str) -> str:
        return f'<{name}><rdf:Alt><rdf:li xml:lang="x-default">{html.escape(value, quote=False)}</rdf:li></rdf:Alt></{name}>'

    body = f"<xmp:CreatorTool>{creator}</xmp:CreatorTool>"
    body += alt("dc:description", description) if description is not None else ""
    body += alt("exif:UserComment", user_comment) if user_comment is not None else ""
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
        f"{body}</rdf:Description></rdf:RDF></x:xmpmeta>"
    )


def png_with_xmp(packet: str) -> bytes:
    return png_with_chunks([png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + packet.encode("utf-8"))])


def jpeg_with_xmp(packet: str) -> bytes:
    return with_segment(toy_jpeg(), 0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + packet.encode("utf-8"))


def app13(datasets: list[tuple[int, int, bytes]], declared: int | None = None) -> bytes:
    iim = b"".join(
        b"\x1c" + bytes([record, dataset]) + struct.pack(">H", len(value)) + value
        for record, dataset, value in datasets
    )
    size = len(iim) if declared is None else declared
    block = (
        b"8BIM"
        + struct.pack(">H", 0x0404)
        + b"\x00\x00"
        + struct.pack(">I", size)
        + iim
        + (b"\x00" if len(iim) % 2 else b"")
    )
    return b"Photoshop 3.0\x00" + block


# --- Easy Diffusion ---------------------------------------------------------------------------------

ED_REQUEST = {
    "prompt": PROMPT,
    "negative_prompt": "blurry",
    "seed": 3000000001,
    "use_stable_diffusion_model": "toy-shapes-v1",
    "clip_skip": False,
    "use_vae_model": "vae-ft-mse-840000",
    "sampler_name": "dpmpp_2m",
    "width": 512,
    "height": 512,
    "num_inference_steps": 30,
    "guidance_scale": 7.5,
    "use_lora_model": ["shapes_lora", "outline_lora"],
    "lora_alpha": [0.5, 0.75],
    "use_hypernetwork_model": None,
    "use_embeddings_model": None,
    "tiling": None,
    "use_face_correction": None,
    "use_upscale": None,
}


def ed_png(record: dict) -> bytes:
    # sdkit: PngInfo().add_text(key, str(val)) for every field, in the request's order
    return png_with_chunks([png_chunk(b"tEXt", k.encode() + b"\x00" + str(v).encode()) for k, v in record.items()])


def assert_easy_diffusion(meta) -> None:
    assert meta.generator == "easydiffusion"
    assert (meta.prompt, meta.negative_prompt, meta.seed, meta.steps, meta.cfg_scale, meta.sampler, meta.model) == (
        PROMPT,
        "blurry",
        "3000000001",
        30,
        7.5,
        "dpmpp_2m",
        "toy-shapes-v1",
    )


def test_easy_diffusion_png_text_chunk_per_field_with_python_reprs():
    meta = extract(ed_png(ED_REQUEST)).best
    assert_easy_diffusion(meta)
    resources = {(r.kind, r.name): r.weight for r in meta.resources}
    assert resources == {
        ("checkpoint", "toy-shapes-v1"): None,
        ("vae", "vae-ft-mse-840000"): None,
        ("lora", "shapes_lora"): 0.5,
        ("lora", "outline_lora"): 0.75,
    }
    assert meta.extra["field_sources"]["seed"] == "png:tEXt:seed"
    assert meta.extra["field_sources"]["model"] == "png:tEXt:use_stable_diffusion_model"


def test_easy_diffusion_png_with_ui_labels():
    labels = {
        "Prompt": PROMPT,
        "Negative Prompt": "blurry",
        "Seed": 3000000001,
        "Stable Diffusion model": "toy-shapes-v1",
        "Sampler": "dpmpp_2m",
        "Steps": 30,
        "Guidance Scale": 7.5,
        "LoRA model": "shapes_lora, outline_lora",
        "LoRA Strength": "0.5, 0.75",
    }
    meta = extract(ed_png(labels)).best
    assert_easy_diffusion(meta)
    assert ("lora", "outline_lora", 0.75) in {(r.kind, r.name, r.weight) for r in meta.resources}


@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le"])
def test_easy_diffusion_jpeg_user_comment_json(encoding):
    comment = b"UNICODE\x00" + json.dumps(ED_REQUEST).encode(encoding)  # piexif.helper.UserComment.dump(..., "unicode")
    result = extract(jpeg_with_exif(tiff([], big_endian=False, exif_entries=[(0x9286, 7, comment)])))
    assert_easy_diffusion(result.best)
    assert result.found[0] == "easydiffusion@exif:UserComment"


def test_easy_diffusion_sidecar_json():
    result = extract(toy_jpeg(), sidecars=[("image.json", json.dumps(ED_REQUEST).encode())])
    assert_easy_diffusion(result.best)


def test_easy_diffusion_damaged_values_are_not_fatal():
    broken = {
        **ED_REQUEST,
        "use_lora_model": "['shapes_lora', ",
        "lora_alpha": "[0.5,",
        "seed": "None",
        "num_inference_steps": "thirty",
    }
    meta = extract(ed_png(broken)).best
    assert meta.generator == "easydiffusion" and meta.prompt == PROMPT
    assert meta.seed is None and meta.steps is None
    assert [r.name for r in meta.resources if r.kind == "lora"] == ["['shapes_lora'"]  # the damaged text, not a guess


def test_png_prompt_chunk_alone_is_not_easy_diffusion():
    result = extract(png_with_chunks([png_chunk(b"tEXt", b"prompt\x00" + PROMPT.encode())]))
    assert all(not f.startswith("easydiffusion") for f in result.found)


# --- Draw Things ---------------------------------------------------------------------------------------

DRAW_THINGS = {
    "c": PROMPT,
    "uc": "blurry",
    "seed": 2718281828,
    "steps": 20,
    "scale": 4.5,
    "sampler": "DPM++ 2M Karras",
    "model": "toy_shapes_v1_f16.ckpt",
    "size": "512x512",
    "strength": 1,
    "lora": [{"file": "shapes_lora_f16.ckpt", "weight": 0.6}],
    "v2": {"clipSkip": 1, "refinerModel": None, "hiresFix": False},
}


def assert_draw_things(meta) -> None:
    assert meta.generator == "draw-things"
    assert (meta.prompt, meta.negative_prompt, meta.seed, meta.steps, meta.cfg_scale, meta.sampler, meta.model) == (
        PROMPT,
        "blurry",
        "2718281828",
        20,
        4.5,
        "DPM++ 2M Karras",
        "toy_shapes_v1_f16.ckpt",
    )
    assert ("lora", "shapes_lora_f16.ckpt", 0.6) in {(r.kind, r.name, r.weight) for r in meta.resources}


def test_draw_things_png_xmp_user_comment():
    summary = (
        f"{PROMPT}\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M Karras, Guidance Scale: 4.5, Seed: 2718281828"
    )
    result = extract(png_with_xmp(xmp_packet(summary, json.dumps(DRAW_THINGS))))
    assert_draw_things(result.best)
    assert result.best.source == "png:xmp:UserComment"


def test_draw_things_jpeg_xmp():
    assert_draw_things(extract(jpeg_with_xmp(xmp_packet(None, json.dumps(DRAW_THINGS)))).best)


def test_draw_things_damaged_json_is_not_read_as_draw_things():
    result = extract(png_with_xmp(xmp_packet(None, json.dumps(DRAW_THINGS)[:-20])))
    assert all(not f.startswith("draw-things") for f in result.found)
    result = extract(png_with_xmp(xmp_packet(None, json.dumps({"c": PROMPT}))))  # no settings: not its record
    assert all(not f.startswith("draw-things") for f in result.found)


# --- Mochi Diffusion --------------------------------------------------------------------------------------

MOCHI = (
    f"Include in Image: {PROMPT}; with a thin outline; Exclude from Image: blurry; Model: toy-shapes_split-einsum; "
    "Steps: 12; Guidance Scale: 11.0; Seed: 4242; Size: 512x512; Upscaler: ; Scheduler: DPM-Solver++; "
    "ML Compute Unit: CPU & Neural Engine; Generator: Mochi Diffusion 4.3"
)


def assert_mochi(meta) -> None:
    assert meta.generator == "mochi-diffusion"
    assert meta.prompt == f"{PROMPT}; with a thin outline"  # "; " inside the prompt is kept
    assert (meta.negative_prompt, meta.seed, meta.steps, meta.cfg_scale, meta.sampler, meta.model) == (
        "blurry",
        "4242",
        12,
        11.0,
        "DPM-Solver++",
        "toy-shapes_split-einsum",
    )
    assert meta.extra["generator"] == "Mochi Diffusion 4.3"


def test_mochi_diffusion_png_xmp_description():
    result = extract(png_with_xmp(xmp_packet(MOCHI, creator="Mochi Diffusion")))
    assert_mochi(result.best)
    assert result.found == ["mochi-diffusion@png:xmp:description"]


def test_mochi_diffusion_jpeg_iptc_caption():
    data = with_segment(
        toy_jpeg(),
        0xED,
        app13([(1, 90, b"\x1b%G"), (2, 65, b"Mochi Diffusion"), (2, 70, b"4.3"), (2, 120, MOCHI.encode("utf-8"))]),
    )
    result = extract(data)
    assert_mochi(result.best)
    assert result.found == ["mochi-diffusion@iptc:CaptionAbstract"]
    assert {p.location for p in result.raw} >= {"iptc:OriginatingProgram", "iptc:ProgramVersion"}
    assert not result.errors


def test_iptc_block_with_lying_sizes():
    data = with_segment(toy_jpeg(), 0xED, app13([(2, 120, MOCHI.encode())], declared=100_000))
    result = extract(data)
    assert any("beyond the segment" in e for e in result.errors)
    assert result.best.generator == "mochi-diffusion"  # what the segment holds is still read
    for body in (
        b"Photoshop 3.0\x00" + b"8BIM\x04\x04",
        b"Photoshop 3.0\x00XXXX" + b"\x00" * 20,
        app13([(2, 120, MOCHI.encode())])[:-40],
    ):
        result = extract(with_segment(toy_jpeg(), 0xED, body))
        assert result.errors  # a cut caption is read as far as it goes, and said to be cut
    # (Pillow itself refuses the first of these files: a resource block cut after its id)
    Image.open(io.BytesIO(with_segment(toy_jpeg(), 0xED, app13([(2, 120, MOCHI.encode())])[:-40]))).load()


def test_plain_description_is_not_mochi():
    result = extract(png_with_xmp(xmp_packet("Include in Image: a cat", creator="Preview")))
    assert all(not f.startswith("mochi") for f in result.found)


# --- Fooocus-MRE ---------------------------------------------------------------------------------------------


def test_fooocus_mre_comment_json():
    record = {
        "prompt": PROMPT,
        "negative_prompt": "blurry",
        "styles": ["Default (Slightly Cinematic)"],
        "real_prompt": f"cinematic still {PROMPT}",
        "real_negative_prompt": "blurry, anime",
        "seed": 123456789,
        "width": 1152,
        "height": 896,
        "sampler": "dpmpp_2m_sde_gpu",
        "scheduler": "karras",
        "performance": "Speed",
        "steps": 30,
        "switch": 20,
        "sharpness": 2.0,
        "cfg": 7.0,
        "base_clip_skip": -2,
        "refiner_clip_skip": -2,
        "base_model": "toyShapesXL_v1.safetensors",
        "refiner_model": "None",
        "l1": "shapes_lora.safetensors",
        "w1": 0.5,
        "l2": "None",
        "w2": 0.5,
        "l3": "None",
        "w3": 0.5,
        "l4": "None",
        "w4": 0.5,
        "l5": "None",
        "w5": 0.5,
        "freeu": False,
        "img2img": False,
        "revision": False,
        "software": "Fooocus-MRE v2.0.78.5",
    }
    data = png_with_chunks([png_chunk(b"tEXt", b"Comment\x00" + json.dumps(record).encode())])
    meta = extract(data).best
    assert meta.generator == "fooocus-mre"
    assert (meta.prompt, meta.seed, meta.steps, meta.cfg_scale, meta.sampler, meta.scheduler, meta.model) == (
        PROMPT,
        "123456789",
        30,
        7.0,
        "dpmpp_2m_sde_gpu",
        "karras",
        "toyShapesXL_v1.safetensors",
    )
    assert [(r.name, r.weight) for r in meta.resources if r.kind == "lora"] == [("shapes_lora.safetensors", 0.5)]
    assert meta.extra["real_prompt"] == f"cinematic still {PROMPT}"


# --- plain text chunks named after fields (diffusers scripts, hosted services) -----------------------------------


def test_plain_text_chunks_named_after_fields():
    chunks = [
        png_chunk(b"tEXt", b"prompt\x00" + PROMPT.encode()),
        png_chunk(b"tEXt", b"negative_prompt\x00blurry"),
        png_chunk(b"tEXt", b"seed\x0077"),
        png_chunk(b"tEXt", b"model\x00toy-shapes"),
        png_chunk(b"tEXt", b"steps\x00many"),
    ]
    result = extract(png_with_chunks(chunks))
    meta = result.best
    assert (meta.generator, meta.prompt, meta.negative_prompt, meta.seed, meta.model, meta.steps) == (
        "png-text",
        PROMPT,
        "blurry",
        "77",
        "toy-shapes",
        None,
    )
    assert meta.extra["field_sources"] == {
        "prompt": "png:tEXt:prompt",
        "negative_prompt": "png:tEXt:negative_prompt",
        "seed": "png:tEXt:seed",
        "model": "png:tEXt:model",
    }


def test_plain_text_chunks_never_outrank_a_known_writer():
    graph = {
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["4", 1]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "toy.safetensors"}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 5,
                "steps": 9,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "model": ["4", 0],
                "positive": ["6", 0],
                "latent_image": ["5", 0],
            },
        },
    }
    result = extract(png_with_chunks([png_chunk(b"tEXt", b"prompt\x00" + json.dumps(graph).encode())]))
    assert result.best.generator == "comfyui" and result.found == ["comfyui@png:tEXt:prompt"]
