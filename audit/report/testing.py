"""Test kit: a small benign report fixture, and the contract every ReportWriter must meet.

``build_fixture(root)`` crawls a toy archive of coloured shapes and writes findings, a
cluster and a flag run exactly as the flag stage does (through ``FindingsStore``), so report
tests do not depend on embeddings. Planted "harmful" payloads are XSS strings, nothing else.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

XSS_PROMPT = (
    'a photo of a blue triangle <script>window.__pwned="prompt-script"</script>'
    '<img src=x onerror="window.__pwned=\'prompt-onerror\'"> "quoted" & done'
)
XSS_NAME = "<img src=x onerror=window.__pwned=1>"
HUGE_PROMPT = "a green square, " * 3000  # 48,000 characters

POLICY_TOML = """
[policy]
name = "toy-report"
version = "2"

[[category]]
id = "red-shapes"
severity = "critical"
no_view = true
description = "Red shapes (toy stand-in for a never-render category)"

[[category]]
id = "triangles"
severity = "high"
no_view = false
description = "Triangles (toy stand-in)"

[[category]]
id = "squares"
severity = "medium"
no_view = false
description = "Squares (toy stand-in)"

[[category]]
id = "prompt-evasion"
severity = "low"
no_view = false
description = "Over-long prompts"

[[rule]]
id = "triangle-words"
words = ["triangle"]
fields = ["prompt"]

[[flag]]
category = "triangles"
any = ["rule:triangle-words"]
"""

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 200, 40)}


def _png(path: Path, colour: str, shape: str, prompt: str, negative: str = "blurry, lowres") -> None:
    from PIL import Image, ImageDraw, PngImagePlugin

    img = Image.new("RGB", (64, 64), (255, 255, 255))
    d = ImageDraw.Draw(img)
    rgb = COLOURS[colour]
    if shape == "circle":
        d.ellipse((10, 10, 54, 54), fill=rgb)
    elif shape == "square":
        d.rectangle((12, 12, 52, 52), fill=rgb)
    else:
        d.polygon([(32, 8), (58, 56), (6, 56)], fill=rgb)
    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        f"{prompt}\nNegative prompt: {negative}\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
        f"Seed: {abs(hash(path.name)) % 10000}, Size: 64x64, Model hash: abc123def0, "
        'Model: toyModel_v1, Lora hashes: "toyLora: 0123456789ab"',
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, pnginfo=info)


@dataclass
class Fixture:
    index: Path
    archive: Path
    policy_path: Path
    policy_hash: str
    items: dict[str, str]  # file stem -> item_id
    run_id: int


def build_fixture(root: Path, *, with_findings: bool = True, remove_missing: bool = True) -> Fixture:
    import audit
    from audit.findings.store import Finding, FindingsStore, Signal
    from audit.policy import load_policy
    from audit.timeutil import utc_now

    root = Path(root)
    archive = root / "archive"
    files = {
        "red_triangle": ("red", "triangle", "a photo of a red triangle on a white background"),
        "red_circle": ("red", "circle", "a red circle"),
        "blue_triangle": ("blue", "triangle", XSS_PROMPT),
        "yellow_triangle": ("yellow", "triangle", "a yellow triangle, crisp edges"),
        "green_square": ("green", "square", HUGE_PROMPT),
        "blue_square": ("blue", "square", "a blue square"),
        "named": ("yellow", "square", "a yellow square"),
        "gone": ("green", "triangle", "a green triangle that will be deleted"),
        "clean": ("blue", "circle", "a blue circle"),
    }
    paths = {}
    for stem, (colour, shape, prompt) in files.items():
        name = f"{XSS_NAME}.png" if stem == "named" else f"{stem}.png"
        paths[stem] = archive / ("sub" if stem.endswith("square") else "") / name
        _png(paths[stem], colour, shape, prompt)
    policy_path = root / "policy.toml"
    policy_path.write_text(POLICY_TOML, "utf-8")
    policy = load_policy(policy_path)
    index = root / "idx"
    audit.crawl([str(archive)], index, workers=1)
    a = audit.open(index)
    try:
        df = a.items()
        by_uri = dict(zip(df["uri"].to_list(), df["item_id"].to_list()))
        items = {stem: by_uri[str(p)] for stem, p in paths.items()}
        conn = a.catalog.conn
        store = FindingsStore(conn)
        run_id = int(
            conn.execute(
                "INSERT INTO flag_runs (policy_hash, policy_name, policy_version, policy_path, model_key, thresholds, at) "
                "VALUES (?,?,?,?,?,?,?)",
                (
                    policy.content_hash,
                    policy.name,
                    policy.version,
                    str(policy_path),
                    "toy-shapes:test",
                    json.dumps({"red": {"image": 0.24, "prompt": 0.3, "calibrated": False, "how": "policy"}}),
                    utc_now(),
                ),
            ).lastrowid
        )
        if with_findings:
            h = policy.content_hash
            cid = f"{h[:12]}:semantic:0"

            def rule(prompt: str) -> Signal:
                i = prompt.find("triangle")
                match = {"field": "prompt", "span": [i, i + 8], "text": "triangle", "pattern": "triangle"}
                return Signal(
                    "prompt_rule", "rule:triangle-words", 1.0, 1.0, 0.0, {"matches": [match], "text": "triangle"}
                )

            def concept(score: float) -> Signal:
                return Signal("concept", "concept:red", score, 0.24, round(score - 0.24, 4), {"space": "image"})

            fs = [
                Finding(items["red_triangle"], "red-shapes", "critical", h, [concept(0.31)], cluster_id=cid),
                Finding(
                    items["red_triangle"], "triangles", "high", h, [rule(files["red_triangle"][2])], cluster_id=cid
                ),
                Finding(items["red_circle"], "red-shapes", "critical", h, [concept(0.29)], cluster_id=cid),
                Finding(items["blue_triangle"], "triangles", "high", h, [rule(XSS_PROMPT)], cluster_id=cid),
                Finding(items["yellow_triangle"], "triangles", "high", h, [rule(files["yellow_triangle"][2])]),
                Finding(items["gone"], "triangles", "high", h, [rule(files["gone"][2])]),
                Finding(
                    items["green_square"],
                    "prompt-evasion",
                    "low",
                    h,
                    [
                        Signal(
                            "prompt_rule",
                            "prompt:overlong",
                            float(len(HUGE_PROMPT)),
                            20000.0,
                            float(len(HUGE_PROMPT) - 20000),
                            {"chars": len(HUGE_PROMPT)},
                        )
                    ],
                ),
                Finding(
                    items["blue_square"],
                    "squares",
                    "medium",
                    h,
                    [
                        Signal(
                            "hash_match",
                            "hash:known",
                            4.0,
                            31.0,
                            27.0,
                            {"bank": "toy-bank", "label": "toy square <b>label</b>", "distance": 4},
                        )
                    ],
                ),
                Finding(items["named"], "squares", "medium", h, [concept(0.27)]),
            ]
            store.upsert_findings(fs, run_id=run_id)
            members = [items["red_triangle"], items["red_circle"], items["blue_triangle"]]
            conn.execute(
                "INSERT INTO clusters (cluster_id, policy_hash, kind, size, members, medoids, top_terms, "
                "concept_scores, flagged_share, flagged, categories, run_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    cid,
                    h,
                    "semantic",
                    3,
                    json.dumps(members),
                    json.dumps(members[:1]),
                    json.dumps([["triangle", 2], ["red", 2]]),
                    json.dumps({"red": {"score": 0.3, "threshold": 0.24}}),
                    1.0,
                    1,
                    json.dumps(["red-shapes", "triangles"]),
                    run_id,
                ),
            )
    finally:
        a.close()
    if remove_missing:
        paths["gone"].unlink()
    return Fixture(index, archive, policy_path, policy.content_hash, items, run_id)


# ----------------------------------------------------------------------------- writer contract


def check_writer(writer, data, out_dir: Path) -> list[Path]:
    """The contract every ReportWriter meets; returns the files it wrote."""
    from audit.report.base import ReportWriter

    assert isinstance(writer, ReportWriter), f"{writer!r} does not implement ReportWriter"
    assert isinstance(writer.name, str) and writer.name
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(out_dir))
    paths = writer.write(data, out_dir)
    assert paths, "a writer writes at least one file"
    after = set(os.listdir(out_dir))
    assert after - before == {p.name for p in paths}, "a writer returns every file it wrote, and only those"
    blob = b""
    for p in paths:
        assert p.parent == out_dir and p.is_file()
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, f"{p.name} must be owner-only"
        if p.suffix == ".parquet":  # compressed: compare its content, not its bytes
            import pyarrow.parquet as pq

            blob += str(pq.read_table(p).to_pylist()).encode("utf-8", "backslashreplace")
        else:
            blob += p.read_bytes()
    for f in data.findings:
        assert f.finding_id.encode() in blob, f"{writer.name}: finding {f.finding_id} missing"
    if writer.name != "html":
        assert b"data:image" not in blob, "only the HTML page may hold thumbnails"
    for item in data.items.values():
        if item.no_view and item.thumb is not None:
            raise AssertionError("a no_view item must never have a thumbnail")
    return paths


def record_findings(data) -> list[dict[str, Any]]:
    from audit.report.base import finding_record

    return [finding_record(data, f) for f in data.findings]
