"""Face likeness ([[faces]]): acceptance on the real photos of ../shared/corpora/faces.

The gallery holds two of the six persons there (Barack Obama from obama-1.jpg, Joe Biden from
biden-1.jpg), built in tmp_path. "Generations" are made from OTHER photos of them
(obama-2.jpg, and each face of two-people.jpg cut out) and from the four persons not in the
gallery: crops, resizes, JPEG re-encoding, colour shifts, and pasting into a larger toy-world
scene. Recall on gallery persons must be >= 0.95 and nobody else may match. The photos are
read from the corpus at test time, never copied into the project; derived images live in
tmp_path only, and are only benign toy scenes with a portrait pasted in.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("AUDIT_CORPORA", REPO.parent / "shared" / "corpora")) / "faces"

pytestmark = [
    pytest.mark.skipif(not (FACES / "EXPECTED.json").is_file(), reason="../shared/corpora/faces not present"),
]
dlib = pytest.importorskip("dlib", reason='the "faces" extra is not installed')

GALLERY = {"barack-obama": ["obama-1.jpg"], "joe-biden": ["biden-1.jpg"]}
# (photo, crop box as fractions or None, person): other photos of the gallery persons
PROBES = [
    ("obama-2.jpg", None, "barack-obama"),
    ("two-people.jpg", (0.0, 0.0, 0.5, 1.0), None),  # persons resolved below, from the detector
    ("two-people.jpg", (0.5, 0.0, 1.0, 1.0), None),
]
STRANGERS = ["alex-lacamoire-1.jpg", "kit-harington-1.jpg", "lin-manuel-miranda-1.png", "rose-leslie-1.jpg"]


def _open(name: str) -> Image.Image:
    return Image.open(FACES / name).convert("RGB")


def _crop(img: Image.Image, box) -> Image.Image:
    if box is None:
        return img
    w, h = img.size
    return img.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _toy_scene(img: Image.Image, rng: random.Random) -> Image.Image:
    """The portrait pasted into a larger toy-world scene (coloured shapes on a background)."""
    from audit.embed.toyworld import draw, random_scene

    scene = draw(random_scene(rng), px=64).convert("RGB").resize((1024, 1024), Image.Resampling.NEAREST)
    portrait = img.copy()
    portrait.thumbnail((560, 560))
    scene.paste(portrait, (rng.randint(0, 1024 - portrait.width), rng.randint(0, 1024 - portrait.height)))
    return scene


def variants(img: Image.Image, seed: int) -> list[tuple[str, Image.Image]]:
    """The edits a generation platform's output goes through, one at a time and combined."""
    rng = random.Random(seed)
    w, h = img.size
    out = [
        ("original", img),
        ("crop", img.crop((int(w * 0.08), int(h * 0.05), int(w * 0.92), int(h * 0.97)))),
        ("half-size", img.resize((w // 2, h // 2), Image.Resampling.LANCZOS)),
        ("upscale", img.resize((int(w * 1.5), int(h * 1.5)), Image.Resampling.BICUBIC)),
        ("jpeg-q35", _jpeg(img, 35)),
        (
            "warm",
            Image.merge(
                "RGB",
                [
                    c.point(lambda v, k=k: min(255, int(v * f)))
                    for k, (c, f) in enumerate(zip(img.split(), (1.15, 1.0, 0.85)))
                ],
            ),
        ),
        ("desaturated", ImageEnhance.Color(img).enhance(0.3)),
        ("darker", ImageEnhance.Brightness(img).enhance(0.7)),
        ("toy-scene", _toy_scene(img, rng)),
        ("toy-scene-jpeg", _jpeg(_toy_scene(ImageEnhance.Contrast(img).enhance(1.2), rng), 60)),
    ]
    return out


@pytest.fixture(scope="module")
def model():
    from audit.faces.models import load_face_model

    return load_face_model()


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    for label, photos in GALLERY.items():
        (root / label).mkdir()
        for photo in photos:
            shutil.copyfile(FACES / photo, root / label / photo)  # tmp only, never the project
    return root


def _policy(tmp_path: Path, gallery: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(f"""
[policy]
name = "faces-test"
[[category]]
id = "real-person"
severity = "critical"
[[faces]]
id = "protected"
gallery = "{gallery}"
max_distance = 0.6
min_face_px = 30
[[flag]]
category = "real-person"
all = ["face:protected"]
""")
    return path


@pytest.mark.slow
def test_acceptance_recall_and_no_false_match(model, gallery_dir):
    from audit.faces.describe import describe_faces
    from audit.faces.gallery import build_gallery

    gallery = build_gallery(gallery_dir, model)
    assert sorted(gallery.labels) == sorted(GALLERY) and not gallery.skipped

    def matches(img: Image.Image) -> set[str]:
        faces = describe_faces(model, img, max_side=640)
        best, dist = gallery.nearest(faces.descriptors[faces.sizes >= 30])
        return {gallery.labels[b] for b, d in zip(best, dist) if d <= 0.6}

    # who is in each half of two-people.jpg: the pair is Biden and Obama ("persons" is not
    # positional), so the half that is not Obama's must be Biden's
    expected = []
    for photo, box, person in PROBES:
        img = _crop(_open(photo), box)
        expected.append((img, person))
    halves = [matches(img) for img, person in expected if person is None]
    assert sorted(next(iter(h)) for h in halves if len(h) == 1) == ["barack-obama", "joe-biden"]
    probes = [(img, person or next(iter(halves[i - 1]))) for i, (img, person) in enumerate(expected)]

    hits = total = 0
    missed = []
    for k, (img, person) in enumerate(probes):
        for name, variant in variants(img, seed=k):
            found = matches(variant)
            total += 1
            assert found <= {person}, f"{name}: matched another gallery person: {found}"
            if person in found:
                hits += 1
            else:
                missed.append(name)
    recall = hits / total
    false = []
    for k, photo in enumerate(STRANGERS):
        for name, variant in variants(_open(photo), seed=100 + k):
            if matches(variant):
                false.append(f"{photo}/{name}")
    print(
        f"\nfaces acceptance: recall {hits}/{total} = {recall:.3f} (missed: {missed}); "
        f"false matches {len(false)}/{len(STRANGERS) * 10}"
    )
    assert recall >= 0.95, missed
    assert not false


def test_descriptor_file_round_trip_and_policy(tmp_path, model, gallery_dir):
    from audit.faces.gallery import export_gallery, read_descriptor_file
    from audit.policy import load_policy

    for suffix in (".npz", ".jsonl"):
        out = tmp_path / f"gallery{suffix}"
        written = export_gallery(gallery_dir, out, model)
        read = read_descriptor_file(out)
        assert read.labels == written.labels
        assert np.allclose(read.descriptors, written.descriptors, atol=1e-6)
        assert b"JFIF" not in out.read_bytes()  # labels and numbers, no photo
    pol = load_policy(_policy(tmp_path, "gallery.jsonl"))
    assert pol.faces[0].gallery == tmp_path / "gallery.jsonl" and not pol.faces[0].empty
    assert "face:protected" in pol.signal_names()


def test_default_policy_has_empty_gallery_and_costs_nothing():
    from audit.policy import load_policy

    pol = load_policy()
    (faces,) = pol.faces
    assert faces.empty and faces.max_distance == 0.6
    from audit.flag.extra import policy_detectors

    assert policy_detectors(None, pol) == []  # an empty gallery: no detector, no dlib


@pytest.mark.parametrize(
    "body, message",
    [
        ('gallery = "missing/"', "gallery: no folder or descriptor file at missing/"),
        ('gallery = "bad.jsonl"', "bad.jsonl:1: descriptor must be 128 finite numbers"),
        ('gallery = "g.jsonl"\ngate = "person"', 'gate: concept "person" is not defined'),
        ('gallery = "g.jsonl"\nmax_distance = 3', "max_distance must be a number between 0.01 and 2"),
    ],
)
def test_faces_table_errors(tmp_path, body, message):
    from audit.errors import InputError
    from audit.policy import load_policy

    (tmp_path / "bad.jsonl").write_text(json.dumps({"label": "x", "descriptor": [0.1] * 127}) + "\n")
    (tmp_path / "g.jsonl").write_text("")
    path = tmp_path / "p.toml"
    path.write_text('[[category]]\nid = "c"\nseverity = "low"\n[[faces]]\nid = "f"\n' + body + "\n")
    with pytest.raises(InputError) as info:
        load_policy(path)
    assert message in str(info.value)


def test_without_the_extra_one_line_exit_3(tmp_path, monkeypatch):
    """A policy with a non-empty gallery, dlib not importable: one line naming the extra."""
    import sys

    from audit.errors import DependencyMissing, ExitCode
    from audit.faces import models
    from audit.flag.extra import policy_detectors
    from audit.policy import load_policy

    (tmp_path / "g.jsonl").write_text(json.dumps({"label": "x", "descriptor": [0.0] * 128}) + "\n")
    pol = load_policy(_policy(tmp_path, "g.jsonl"))
    models.load_face_model.cache_clear()
    monkeypatch.setitem(sys.modules, "dlib", None)  # what an environment without the extra sees
    try:
        with pytest.raises(DependencyMissing) as info:
            policy_detectors(None, pol)
    finally:
        models.load_face_model.cache_clear()
    assert info.value.exit_code == ExitCode.ENVIRONMENT
    assert 'pip install ".[faces]"' in str(info.value) and "\n" not in str(info.value)


def test_core_import_stays_free_of_dlib():
    import subprocess
    import sys

    code = (
        "import sys, audit, audit.policy, audit.flag.runner; audit.load_policy(); "
        "print(any(m == 'dlib' or m.startswith('dlib.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    assert out.stdout.strip() == "False"
