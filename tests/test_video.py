"""Videos (mp4/webm written here with PyAV, toy shapes): the first frame is the item's
picture, key frames over its length are its later frames (PDQ, CLIP), the whole video
gets a vPDQ hash, and a prohibited key frame is found and named by its time. A broken
stream is a recorded skip or a warning, never a crash."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from audit.findings.store import signal_dicts

av = pytest.importorskip("av")

import audit  # noqa: E402
from audit.imaging import DecodeError, decode_image  # noqa: E402
from audit.video import is_video, key_frames, sample_times_ms  # noqa: E402

FPS = 10
SECONDS = 3
RED_SECOND = 2  # frames of this second show a red triangle (toy stand-in for a prohibited scene)


def _scene_frames(px: int = 96):
    from audit.embed import toyworld as tw

    rng = random.Random(5)
    blue = tw.draw(tw.random_scene(rng, colour="blue", shape="circle", background="white"), px=px)
    red = tw.draw(tw.random_scene(rng, colour="red", shape="triangle", background="white"), px=px)
    return [red if i // FPS == RED_SECOND else blue for i in range(FPS * SECONDS)], red


def write_video(fmt: str = "mp4") -> bytes:
    frames, _ = _scene_frames()
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream("mpeg4" if fmt == "mp4" else "libvpx", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 96, 96, "yuv420p"
        stream.codec_context.gop_size = FPS  # a key frame every second
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return write_video("mp4")


def test_first_frame_is_the_picture_and_key_frames_cover_the_length(mp4):
    assert is_video(mp4)
    d = decode_image(mp4)
    assert (d.format, d.width, d.height) == ("MP4", 96, 96) and d.frames == len(sample_times_ms(SECONDS))
    notes: list[str] = []
    got = dict(key_frames(mp4, warnings=notes))
    assert sorted(got) == [1000, 2000], (sorted(got), notes)  # the key frames after the first

    def red(img):
        return int(((np.asarray(img)[..., 0] > 150) & (np.asarray(img)[..., 2] < 100)).sum())

    assert red(got[2000]) > 200 and red(got[1000]) < 20


def test_sample_times_first_last_evenly_spaced():
    assert sample_times_ms(3.0, 4) == [0, 1000, 2000, 3000]
    assert sample_times_ms(None) == [0] and len(sample_times_ms(600.0)) == 8


def test_broken_streams_are_recorded_not_a_crash(mp4, tmp_path):
    with pytest.raises(DecodeError) as err:
        decode_image(mp4[: len(mp4) // 3])  # mp4's index (moov) is written last: nothing to open
    assert "\n" not in str(err.value) and "video" in str(err.value)
    webm = write_video("webm")
    damaged = webm[: len(webm) * 2 // 3] + b"\x00" * 500  # later clusters broken
    d = decode_image(damaged)  # the first frame is still there
    assert d.format == "WEBM"
    notes: list[str] = []
    list(key_frames(damaged, warnings=notes))  # as far as it goes; never raises
    src = tmp_path / "src"
    src.mkdir()
    (src / "cut.mp4").write_bytes(mp4[: len(mp4) // 3])
    (src / "damaged.webm").write_bytes(damaged)
    (src / "empty.mov").write_bytes(b"")
    audit.crawl([str(src)], tmp_path / "idx", workers=0)
    items = audit.open(tmp_path / "idx").items()
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in items.iter_rows(named=True)}
    assert rows["cut.mp4"]["status"] == "error" and "video" in rows["cut.mp4"]["error"]
    assert rows["damaged.webm"]["status"] == "ok" and rows["damaged.webm"]["format"] == "WEBM"


@pytest.mark.slow
def test_crawl_hashes_and_flag_names_the_key_frame(mp4, tmp_path):
    pytest.importorskip("open_clip")
    src = tmp_path / "src"
    src.mkdir()
    (src / "clip.mp4").write_bytes(mp4)
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[policy]\nname = "video"\n[[category]]\nid = "red-triangles"\nseverity = "high"\n'
        '[[concept]]\nid = "red-triangle"\ntexts = ["a red triangle"]\nimage_threshold = 0.5\n'
        '[[flag]]\ncategory = "red-triangles"\nall = ["concept:red-triangle/image"]\n'
    )
    with audit.open(tmp_path / "idx", create=True) as a:
        a.crawl([str(src)], workers=0)
        row = a.items().row(0, named=True)
        assert row["format"] == "MP4" and row["status"] == "ok"
        assert [f["frame"] for f in json.loads(row["frame_pdq"])] == [1000, 2000]
        vpdq = json.loads(row["video_hash"])
        assert len(vpdq) >= SECONDS and all(len(h[0]) == 64 for h in vpdq)
        a.embed(model="toy-shapes", workers=0)
        a.flag(str(policy))
        found = [signal_dicts(r["signals"]) for r in a.findings().iter_rows(named=True)]
    assert len(found) == 1
    sig = next(s for s in found[0] if s["name"] == "concept:red-triangle/image")
    assert sig["detail"]["frame"] == 2000
