"""The detector contract kit: every detector of ``audit.flag`` runs these tests.

Detectors get a synthetic ``FlagContext`` (toy-policy prompts, hashes and vectors from a
deterministic bag-of-words "embedder", no model) and must: return ``Detections``; put signals
only on rows that exist; use signal kinds the findings store knows and names the policy can
produce; give finite score, threshold and margin with a JSON-serialisable detail; be
deterministic; find nothing in an empty context. Detector-specific behaviour follows.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from audit.findings.store import SIGNAL_KINDS
from audit.flag.base import Detections, Detector, FlagContext
from audit.flag.concepts import ConceptDetector
from audit.flag.hashes import HashDetector
from audit.flag.prompts import PromptDetector
from audit.flag.runner import default_detectors
from audit.policy import load_policy

TOY = Path(__file__).resolve().parents[1] / "samples" / "policy" / "toy.toml"
DIM = 64
KNOWN_PDQ = "ffffffffffffffff0000000000000000a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"  # toy-known-1
FALSE_POSITIVE_PDQ = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"
KNOWN_MD5 = "5de4305de0504e3776da94062a440662"


class BagOfWords:
    """A deterministic stand-in embedder: each word a fixed random direction, texts their sum."""

    def _word(self, w: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)

    def embed_texts(self, texts):
        out = []
        for t in texts:
            words = [w.strip(",.:").lower() for w in t.split()] or ["empty"]
            weights = {"red": 3.0, "triangle": 3.0, "orange": 3.0}
            v = sum(self._word(w) * weights.get(w, 0.3) for w in words)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

    def embed_images(self, images):
        raise AssertionError("no exemplars in the toy policy")


def _flip(hex_hash: str, nbits: int) -> str:
    value = int(hex_hash, 16)
    for b in range(nbits):
        value ^= 1 << (b * 7 % 256)
    return f"{value:064x}"


ROWS = [
    # prompt, negative, image text (what the image "shows"), pdq, quality, md5
    ("a photo of a red triangle", "blurry", "red triangle", None, None, None),
    ("crimson triangles, 4k", None, "red triangle", _flip(KNOWN_PDQ, 5), 80, None),
    ("a blue circle", "red", "blue circle", None, None, KNOWN_MD5),
    ("a love triangle drama poster", None, "green square", _flip(KNOWN_PDQ, 5), 20, None),  # quality too low
    ("portrait of Richard Roe-Placeholder with a triangle", None, "yellow star", FALSE_POSITIVE_PDQ, 90, None),
    ("an orange triangle", None, "orange triangle", None, None, None),
    ("x" * 20_001, None, "gray", None, None, None),  # over-long prompt
    (None, None, "blue square", None, None, None),
]


def make_context(rows=ROWS) -> FlagContext:
    policy = load_policy(TOY)
    emb = BagOfWords()
    n = len(rows)
    images = emb.embed_texts([r[2] for r in rows]) if n else np.zeros((0, DIM), np.float32)
    prompts = np.zeros((n, DIM), np.float32)
    has_prompt = np.zeros(n, bool)
    for i, r in enumerate(rows):
        if r[0]:
            prompts[i] = emb.embed_texts([r[0][:200]])[0]
            has_prompt[i] = True
    background = emb.embed_texts(
        [
            f"{c} {s}"
            for c in ("green", "blue", "yellow", "purple")
            for s in ("circle", "square", "star", "thing", "blob", "shape")
        ]
        * 2
    )
    return FlagContext(
        policy=policy,
        item_ids=[hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)],
        prompts=[r[0] for r in rows],
        negative_prompts=[r[1] for r in rows],
        md5=[r[5] for r in rows],
        pdq=[r[3] for r in rows],
        pdq_quality=[r[4] for r in rows],
        image_vectors=images,
        has_image=np.ones(n, bool),
        prompt_vectors=prompts,
        has_prompt=has_prompt,
        model_key="bag/of-words",
        embedder_factory=lambda: emb,
        sample_vectors=np.concatenate([background, images]),
    )


def provenance_detector():
    """Over a catalog stand-in whose first rows carry provenance records: a valid AI-declaring
    manifest, an invalid one, XMP only, and one that is not JSON."""
    import sqlite3

    from audit.flag.provenance import ProvenanceDetector

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE items (item_id TEXT PRIMARY KEY, provenance TEXT)")
    manifest = {
        "claim_generator": "ToyGen 1.0",
        "signer": {"common_name": "Toy"},
        "validation_state": "Valid",
        "digital_source_types": ["trainedAlgorithmicMedia"],
        "signature_valid": True,
        "invalid": False,
    }
    records = [
        {"c2pa": manifest, "digital_source_types": ["trainedAlgorithmicMedia"], "ai_generated": True},
        {
            "c2pa": {**manifest, "validation_state": "Invalid", "invalid": True, "failures": ["x"]},
            "digital_source_types": [],
            "ai_generated": False,
        },
        {"xmp": {"digital_source_types": ["trainedAlgorithmicMedia"]}, "ai_generated": True},
    ]
    ids = make_context().item_ids
    conn.executemany("INSERT INTO items VALUES (?, ?)", [(ids[i], json.dumps(r)) for i, r in enumerate(records)])
    conn.execute("INSERT INTO items VALUES (?, ?)", (ids[3], "{not json"))
    return ProvenanceDetector(conn)


provenance_detector.__name__ = "ProvenanceDetector"

# the toy list's vpdq row (samples/policy/banks/known.csv, "toy-known-video"): three frames
TOY_VIDEO = [hashlib.sha256(f"toy-video-frame-{i}".encode()).hexdigest() for i in range(3)]


def video_hash_detector():
    """Over a catalog stand-in with video hashes: the listed video re-encoded (frames a few bits
    off, one extra frame: 3 of 4 = 75 % < 80 %, so a fourth close frame is added: 4 of 5 = 80 %),
    a video of other frames, one not JSON."""
    import sqlite3

    from audit.flag.videos import VideoHashDetector

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE items (item_id TEXT PRIMARY KEY, video_hash TEXT)")
    other = [hashlib.sha256(f"other-frame-{i}".encode()).hexdigest() for i in range(4)]
    near = [_flip(h, 6) for h in TOY_VIDEO] + [_flip(TOY_VIDEO[2], 9), other[0]]
    ids = make_context().item_ids
    rows = [
        (ids[0], json.dumps([[h, 100, i, float(i)] for i, h in enumerate(near)])),
        (ids[1], json.dumps([[h, 100, i, float(i)] for i, h in enumerate(other)])),
        (ids[2], "[not json"),
    ]
    conn.executemany("INSERT INTO items VALUES (?, ?)", rows)
    return VideoHashDetector(conn)


video_hash_detector.__name__ = "VideoHashDetector"
# The registry itself (a new default detector is covered), plus the detectors a policy adds.
DETECTORS = [type(d) for d in default_detectors()] + [provenance_detector, video_hash_detector]


@pytest.fixture(params=DETECTORS, ids=lambda d: d.__name__)
def detector(request) -> Detector:
    return request.param()


# ------------------------------------------------------------------------------ the contract


def _all_signals(det: Detections):
    for row, sigs in det.signals.items():
        for s in sigs:
            yield row, s
    for row, sigs in det.suppressions.items():
        for s in sigs:
            yield row, s


def test_contract_protocol_and_types(detector):
    assert isinstance(detector, Detector)
    assert isinstance(detector.name, str) and detector.name
    assert isinstance(detector.detect(make_context()), Detections)


def test_contract_rows_kinds_names_numbers(detector):
    ctx = make_context()
    det = detector.detect(ctx)
    produced = ctx.policy.signal_names()
    for row, s in _all_signals(det):
        assert isinstance(row, int) and 0 <= row < len(ctx)
        assert s.kind in SIGNAL_KINDS
        assert ":" in s.name
        if s.kind != "negative":
            assert s.name in produced, s.name
        for value in (s.score, s.threshold, s.margin):
            assert isinstance(value, float) and math.isfinite(value), s
        assert isinstance(s.detail, dict)
        json.dumps(s.to_dict())  # serialisable
    json.dumps(det.thresholds, default=float)
    json.dumps(det.stats, default=float)


def test_contract_deterministic(detector, request):
    a = detector.detect(make_context())
    b = request.node.callspec.params["detector"]().detect(make_context())  # a fresh one, made the same way

    def dump(d):
        return json.dumps({r: [s.to_dict() for s in sigs] for r, sigs in sorted(d.signals.items())}, sort_keys=True)

    assert dump(a) == dump(b)
    assert a.suppress_categories == b.suppress_categories and a.suppress_concepts == b.suppress_concepts


def test_contract_empty_context(detector):
    det = detector.detect(make_context([]))
    assert not det.signals and not det.suppressions


# ------------------------------------------------------------------------------ per detector


def test_provenance_detector_fires_from_the_records():
    det = provenance_detector().detect(make_context())
    names = {row: sorted(s.name for s in sigs) for row, sigs in det.signals.items()}
    assert names == {
        0: ["provenance:ai-generated", "provenance:c2pa"],
        1: ["provenance:c2pa", "provenance:c2pa-invalid"],
        2: ["provenance:ai-generated"],
    }
    assert det.stats["unreadable_records"] == 1


def test_video_hash_detector_reports_the_match_percentages():
    det = video_hash_detector().detect(make_context())
    assert set(det.signals) == {0}
    (s,) = det.signals[0]
    assert s.kind == "hash_match" and s.name == "hash:toy-known"
    d = s.detail
    assert d["hash_type"] == "vpdq" and d["label"] == "toy-known-video" and d["line"] == 5
    # 4 of the 5 query frames are within 31 bits of a listed frame; all 3 listed frames matched
    assert (d["query_match_percent"], d["compared_match_percent"]) == (80.0, 100.0)
    assert (d["query_frames"], d["compared_frames"], d["first_match_ms"]) == (5, 3, 0)
    assert (s.score, s.threshold, s.margin) == (80.0, 80.0, 0.0)
    assert det.stats["videos_checked"] == 3


def _names(det: Detections, row: int) -> set[str]:
    return {s.name for s in det.signals.get(row, [])}


def test_concepts_fire_on_image_and_prompt_with_recorded_thresholds():
    ctx = make_context()
    d = ConceptDetector()
    det = d.detect(ctx)
    assert "concept:red-triangle/image" in _names(det, 0)
    assert "concept:red-triangle/prompt" in _names(det, 0)
    assert not any(n.startswith("concept:") for n in _names(det, 2))  # a blue circle
    sig = next(s for s in det.signals[0] if s.name == "concept:red-triangle/image")
    assert sig.margin == pytest.approx(sig.score - sig.threshold, abs=1e-5)
    assert sig.detail["space"] == "image" and sig.detail["threshold_source"].startswith("calibrated:")
    t = det.thresholds["red-triangle"]
    assert t["image"]["source"] == "calibrated:samples" and "percentile" in t["image"]["how"]
    assert t["prompt"]["source"] == "calibrated:reference"


def test_negative_concept_suppresses_its_concepts():
    det = ConceptDetector().detect(make_context())
    assert det.suppress_concepts.get(5) == {"red-triangle"}  # "an orange triangle"
    assert 0 not in det.suppress_concepts
    assert det.suppressions[5][0].kind == "negative"


def test_explicit_threshold_wins_and_previous_thresholds_are_reused():
    from dataclasses import replace

    ctx = make_context()
    concept = replace(ctx.policy.concepts[0], image_threshold=0.99)
    ctx.policy = replace(ctx.policy, concepts=(concept,))
    det = ConceptDetector().detect(ctx)
    assert det.thresholds["red-triangle"]["image"] == {"value": 0.99, "source": "policy", "how": "set in the policy"}
    assert not any(n.endswith("/image") for r in det.signals for n in _names(det, r))
    ctx2 = make_context()
    from audit.flag.concepts import CALIBRATION_VERSION

    ctx2.previous_thresholds = {
        "red-triangle": {
            "image": {"value": 0.5, "source": "calibrated:samples", "how": "x", "calibration": CALIBRATION_VERSION},
            "prompt": {"value": 0.6, "source": "calibrated:reference", "how": "y"},
        }
    }
    det2 = ConceptDetector().detect(ctx2)
    assert (
        det2.thresholds["red-triangle"]["image"]["value"] == 0.5 and det2.thresholds["red-triangle"]["image"]["reused"]
    )
    # one calibrated by an older method (no version: before the reference vocabulary) is calibrated again
    assert det2.thresholds["red-triangle"]["prompt"]["value"] != 0.6
    assert det2.thresholds["red-triangle"]["prompt"]["calibration"] == CALIBRATION_VERSION


def test_special_care_lowers_other_thresholds():
    from dataclasses import replace

    ctx = make_context()
    base = ConceptDetector().detect(make_context()).thresholds["red-triangle"]["image"]["value"]
    special = replace(
        ctx.policy.concepts[0],
        id="anything-red",
        texts=("red",),
        special_care=True,
        image_threshold=-1.0,
        prompt_threshold=-1.0,
    )  # fires everywhere
    ctx.policy = replace(ctx.policy, concepts=(ctx.policy.concepts[0], special), special_care_adjustment=0.05)
    det = ConceptDetector().detect(ctx)
    sig = next(s for s in det.signals[0] if s.name == "concept:red-triangle/image")
    assert "special_care" in sig.detail
    assert sig.threshold == pytest.approx(det.thresholds["red-triangle"]["image"]["value"] - 0.05, abs=1e-6)
    assert base  # calibrated value exists


def test_prompt_rules_names_overlong_with_spans():
    det = PromptDetector().detect(make_context())
    sig = next(s for s in det.signals[0] if s.name == "rule:triangle-words")
    assert sig.kind == "prompt_rule" and sig.detail["text"] == "triangle"
    assert sig.detail["matches"][0]["span"] == [17, 25]
    assert "rule:triangle-words" in _names(det, 1)  # crimson triangles (word and pattern)
    assert "rule:negative-red" in _names(det, 2)  # "red" in the negative prompt
    assert "rule:triangle-words" not in _names(det, 3)  # "love triangle" is an allow phrase
    name = next(s for s in det.signals[4] if s.kind == "name")
    assert name.name == "names:toy-persons" and "Roe-Placeholder" in name.detail["text"]
    assert "prompt:overlong" in _names(det, 6)
    assert 7 not in det.signals


def test_hash_banks_distance_quality_exact_and_negative():
    det = HashDetector().detect(make_context())
    s = det.signals[1][0]
    assert s.kind == "hash_match" and s.name == "hash:toy-known"
    assert s.score == 5 and s.threshold == 31 and s.margin == 26
    assert s.detail["label"] == "toy-known-1" and s.detail["hash_type"] == "pdq"
    assert 3 not in det.signals  # quality 20 < 50: not matched
    exact = det.signals[2][0]
    assert exact.detail["hash_type"] == "md5" and exact.detail["label"] == "toy-known-3"
    assert det.suppress_categories[4] == {"*"}  # negative bank: known false positive
    assert det.suppressions[4][0].detail["label"] == "toy-false-positive"


def test_exemplar_images_are_averaged_into_the_image_concept(tmp_path):
    from dataclasses import replace

    from PIL import Image

    class WithImages(BagOfWords):
        def embed_images(self, images):
            assert all(im.mode == "RGB" for im in images)
            return self.embed_texts(["red triangle"] * len(images))

    path = tmp_path / "exemplar.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    ctx = make_context()
    concept = replace(ctx.policy.concepts[0], exemplars=("exemplar.png",), exemplar_paths=(path,))
    ctx.policy = replace(ctx.policy, concepts=(concept,))
    emb = WithImages()
    ctx.embedder_factory = lambda: emb
    d = ConceptDetector()
    det = d.detect(ctx)
    cv = d.vectors
    assert not np.allclose(cv.image["red-triangle"], cv.text["red-triangle"])
    assert det.thresholds["red-triangle"]["exemplars"] == 1
    assert "concept:red-triangle/image" in _names(det, 0)
