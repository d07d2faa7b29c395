"""Known videos: a hash list's ``vpdq`` rows against the vPDQ the crawl stores for each video
(``items.video_hash``), matched as vpdq's reference matcher does (per-frame PDQ within the
list's distance, query/compared match percentages over thresholds). Videos written here with
PyAV, frames of toy shapes; the listed video's vPDQ is computed from a different encoding
(mp4, 128 px) than the crawled one (webm, 96 px)."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest

av = pytest.importorskip("av")
vpdq = pytest.importorskip("vpdq")

from audit.findings.store import signal_dicts  # noqa: E402
import audit  # noqa: E402
from audit.errors import InputError  # noqa: E402
from audit.policy import load_policy  # noqa: E402

FPS = 5


def _frames(seed: int, n: int = 4):
    """``n`` frames, each a 2x2 grid of toy scenes (a single flat shape has too little
    texture for a PDQ quality over 50)."""
    from PIL import Image

    from audit.embed import toyworld as tw

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (128, 128))
        for k in range(4):
            img.paste(tw.draw(tw.random_scene(rng), px=64), ((k % 2) * 64, (k // 2) * 64))
        out.append(img)
    return out


def _video(frames, fmt: str, px: int) -> bytes:
    """One second per frame, a key frame each second."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream("mpeg4" if fmt == "mp4" else "libvpx", rate=FPS)
        stream.width = stream.height = px
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = FPS
        for img in frames:
            for _ in range(FPS):
                for packet in stream.encode(av.VideoFrame.from_image(img.resize((px, px)))):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _list_row(path, label: str) -> list[str]:
    """A ``vpdq`` row in ThreatExchange's signal-string form."""
    features = vpdq.computeHash(str(path), seconds_per_hash=1.0, thread_count=1)
    return ["vpdq", json.dumps([f"{f.hex},{f.quality},{f.timestamp:.3f}" for f in features]), label]


def _policy(tmp_path, rows, extra: str = "") -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([["hash_type", "hash", "label"], *rows])
    (tmp_path / "videos.csv").write_text(buf.getvalue())
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[policy]\nname = "videos"\n[[category]]\nid = "known-video"\nseverity = "high"\n'
        f'[[hashlist]]\nid = "known-videos"\npath = "videos.csv"\ncategory = "known-video"\n{extra}'
    )
    return str(policy)


def test_a_listed_video_fires_with_its_match_percentages_and_others_do_not(tmp_path):
    listed, other = _frames(1), _frames(2)
    (tmp_path / "listed.mp4").write_bytes(_video(listed, "mp4", 128))
    src = tmp_path / "src"
    src.mkdir()
    (src / "reencoded.webm").write_bytes(_video(listed, "webm", 96))
    (src / "different.mp4").write_bytes(_video(other, "mp4", 96))
    (src / "half.mp4").write_bytes(_video(listed[:2] + other[:2], "mp4", 96))  # 50 % of frames: under 80 %
    policy = _policy(tmp_path, [_list_row(tmp_path / "listed.mp4", "toy-listed-video")])
    with audit.open(tmp_path / "idx", create=True) as a:
        a.crawl([str(src)], workers=0)
        uris = {r["item_id"]: r["uri"].rsplit("/", 1)[-1] for r in a.items().iter_rows(named=True)}
        assert all(r["video_hash"] for r in a.items().iter_rows(named=True))
        a.flag(policy)
        found = {uris[r["item_id"]]: signal_dicts(r["signals"]) for r in a.findings().iter_rows(named=True)}
    assert set(found) == {"reencoded.webm"}
    (sig,) = [s for s in found["reencoded.webm"] if s["detail"].get("hash_type") == "vpdq"]
    d = sig["detail"]
    assert sig["name"] == "hash:known-videos" and d["label"] == "toy-listed-video" and d["line"] == 2
    assert d["query_match_percent"] == 100.0 and d["compared_match_percent"] == 100.0
    assert d["query_frames"] == 4 and d["compared_frames"] == 4 and d["first_match_ms"] == 0
    assert sig["score"] == 100.0 and sig["threshold"] == 80.0 and sig["margin"] == 20.0


def test_match_thresholds_are_the_lists(tmp_path):
    """The half-matching video fires once the list asks for 50 % of the query's frames."""
    listed, other = _frames(1), _frames(2)
    (tmp_path / "listed.mp4").write_bytes(_video(listed, "mp4", 128))
    src = tmp_path / "src"
    src.mkdir()
    (src / "half.mp4").write_bytes(_video(listed[:2] + other[:2], "mp4", 96))
    policy = _policy(tmp_path, [_list_row(tmp_path / "listed.mp4", "v")], "vpdq_query_match = 50\n")
    with audit.open(tmp_path / "idx", create=True) as a:
        a.crawl([str(src)], workers=0)
        a.flag(policy)
        (row,) = a.findings().iter_rows(named=True)
    (sig,) = signal_dicts(row["signals"])
    assert (sig["detail"]["query_match_percent"], sig["detail"]["compared_match_percent"]) == (50.0, 50.0)


@pytest.mark.parametrize(
    "cell, says",
    [
        ("not json", "must be a JSON list"),
        ('["abc,100,0.0"]', "PDQ must be 64 hex digits"),
        (json.dumps([f"{'ab' * 32},high,0.0"]), "quality must be an integer"),
        (json.dumps([[("ab" * 32), 101, 0, 0.0]]), "quality must be 0-100"),
        ("[]", "non-empty"),
    ],
)
def test_a_malformed_vpdq_row_is_a_policy_error_naming_the_line(tmp_path, cell, says):
    good = ["pdq", "ab" * 32, "fine"]
    policy = _policy(tmp_path, [good, ["vpdq", cell, "bad"]])
    with pytest.raises(InputError) as err:
        load_policy(policy)
    message = str(err.value)
    assert "videos.csv:3:" in message and says in message and "\n" not in message


def test_vpdq_rows_are_not_for_negative_banks(tmp_path):
    (tmp_path / "neg.csv").write_text(f'hash_type,hash\nvpdq,"[""{"ab" * 32},100,0.0""]"\n')
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[policy]\nname = "n"\n[[category]]\nid = "c"\nseverity = "low"\n[[negative_bank]]\npath = "neg.csv"\n'
    )
    with pytest.raises(InputError, match=r"neg\.csv:2: .*not negative banks"):
        load_policy(policy)
