"""Metadata trouble never costs the pixels: one decode (``audit.imaging.decode_image``) for
every stage, hostile ancillary data left out of the decoder's way, truncated images decoded
as far as they go, decoder chatter captured into the row, fifos never opened.

Every hostile file is built here, from bytes; nothing large is committed.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, PngImagePlugin

import audit
from audit.crawler.worker import describe
from audit.imaging import MAX_WARNING_CHARS, MAX_WARNINGS, DecodeError, decode_file, decode_image
from audit.errors import ExitCode
from tests.cli_helper import audit_cli, audit_subprocess
from tests.paths import REPO
from tests.toy_world import shape_image

TOY_POLICY = REPO / "samples" / "policy" / "toy.toml"
MiB = 1 << 20


# --- builders ---------------------------------------------------------------------------


def _triangle(size: int = 128) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).polygon([(8, size - 8), (size // 2, 8), (size - 8, size - 8)], fill=(255, 0, 0))
    return img


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _with_chunks(png: bytes, *chunks: bytes, after_idat: bool = False) -> bytes:
    """``png`` with ``chunks`` after IHDR (or just before IEND)."""
    at = png.rindex(b"IEND") - 4 if after_idat else 8 + 25
    return png[:at] + b"".join(chunks) + png[at:]


def ztxt(inflated_bytes: int, keyword: bytes = b"comment") -> bytes:
    """A zTXt chunk whose text inflates to ``inflated_bytes`` (compresses to a few KiB)."""
    return _chunk(b"zTXt", keyword + b"\x00\x00" + zlib.compress(b"lorem ipsum " * (inflated_bytes // 12), 9))


def _segment(marker: int, body: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


def _with_segments(jpeg: bytes, *segments: bytes) -> bytes:
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def tiff(extra_tags=(), *, size: int = 16, corrupt: bool = False) -> bytes:
    """A deflate-compressed RGB TIFF (decoded by libtiff) with ``extra_tags``:
    (tag, type, count, value-or-4-bytes) entries, raw bytes, no Pillow encoder involved."""
    pixels = np.asarray(_triangle(size)).tobytes()
    strip = zlib.compress(pixels)
    if corrupt:
        strip = strip[:2] + b"\x00" * (len(strip) - 2)
    entries = sorted(
        [
            (256, 3, 1, size),
            (257, 3, 1, size),
            (258, 3, 3, "bps"),
            (259, 3, 1, 8),
            (262, 3, 1, 2),
            (273, 4, 1, "strip"),
            (277, 3, 1, 3),
            (278, 3, 1, size),
            (279, 4, 1, len(strip)),
            (284, 3, 1, 1),
            *extra_tags,
        ],
        key=lambda e: e[0],
    )
    data_at = 8 + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        if value == "bps":
            out += struct.pack("<HHII", tag, typ, count, data_at)
        elif value == "strip":
            out += struct.pack("<HHII", tag, typ, count, data_at + 6)
        elif isinstance(value, bytes):
            out += struct.pack("<HHI", tag, typ, count) + value
        elif typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0) + struct.pack("<HHH", 8, 8, 8) + strip
    return bytes(out)


# libtiff prints this (to fd 2, from C) for a tag of a type it does not know
LIBTIFF_TAG = (65002, 99, 1, 1)
LIBTIFF_LINE = "TIFFFetchNormalTag"


def pixels(data: bytes, **kw) -> np.ndarray:
    return np.asarray(decode_image(data, **kw).rgb())


def plain_pillow_pixels(data: bytes) -> np.ndarray:
    from audit.imaging import to_rgb

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(to_rgb(im))


PNG = _encode(_triangle(), "PNG")
JPEG = _encode(_triangle(), "JPEG", quality=90)


# --- ancillary data never costs the pixels ----------------------------------------------


PNG_HOSTILE = {
    "huge zTXt": _with_chunks(PNG, ztxt(3 * MiB // 2)),
    "huge zTXt after IDAT": _with_chunks(PNG, ztxt(3 * MiB // 2), after_idat=True),
    "huge iTXt": _with_chunks(PNG, _chunk(b"iTXt", b"comment\x00\x01\x00\x00\x00" + zlib.compress(b"x" * (2 * MiB)))),
    "huge iCCP": _with_chunks(PNG, _chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(b"\x00" * (2 * MiB)))),
    "many text chunks": _with_chunks(PNG, *(ztxt(MiB - 100, b"k%d" % i) for i in range(70))),  # > 64 MB of text
    "text with a bad checksum": _with_chunks(PNG, _chunk(b"tEXt", b"a\x00b")[:-4] + b"\x00\x00\x00\x00"),
    "zTXt with an unknown method": _with_chunks(PNG, _chunk(b"zTXt", b"k\x00\x05abc")),
    "iCCP with an unknown method": _with_chunks(PNG, _chunk(b"iCCP", b"k\x00\x05abc")),
    "garbage eXIf": _with_chunks(PNG, _chunk(b"eXIf", b"MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x00" * 20)),
    "zero-length tEXt": _with_chunks(PNG, _chunk(b"tEXt", b"")),
}


@pytest.mark.parametrize("case", sorted(PNG_HOSTILE))
def test_png_ancillary_chunks_cannot_fail_the_decode(case):
    got = decode_image(PNG_HOSTILE[case])
    assert (got.format, got.width, got.height, got.warnings) == ("PNG", 128, 128, [])
    assert np.array_equal(np.asarray(got.rgb()), plain_pillow_pixels(PNG))


MPF_BROKEN = (
    b"MPF\x00MM\x00*\x00\x00\x00\x08\x00\x02\xb0\x01\x00\x04\x00\x00\x00\x01\x00\x00\x00\x64"
    b"\xb0\x02\x00\x07\x00\x00\x00\x10\x00\x00\x00\x30\x00\x00\x00\x00" + b"\x00" * 8
)
JPEG_HOSTILE = {
    "huge COM and APP segments": _with_segments(
        JPEG, *[_segment(0xFE, b"c" * 65533)] * 20, *[_segment(0xEF, b"z" * 65533)] * 20
    ),
    "garbage EXIF": _with_segments(JPEG, _segment(0xE1, b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x01" * 64)),
    "short JFIF APP0": _with_segments(JPEG, _segment(0xE0, b"JFIF")),
    "short Adobe APP14": _with_segments(JPEG, _segment(0xEE, b"Adobe")),
    "short ICC APP2": _with_segments(JPEG, _segment(0xE2, b"ICC_PROFILE\x00")),
    "broken MPF index": _with_segments(JPEG, _segment(0xE2, MPF_BROKEN)),
    "junk between segments": _with_segments(JPEG, _segment(0xFE, b"hi"), b"\x00junk\x00", _segment(0xE1, b"x" * 9)),
}


@pytest.mark.parametrize("case", sorted(JPEG_HOSTILE))
def test_jpeg_metadata_segments_cannot_fail_the_decode(case):
    got = decode_image(JPEG_HOSTILE[case])
    assert (got.format, got.width, got.height) == ("JPEG", 128, 128)
    assert not any("truncated" in w for w in got.warnings)
    assert np.array_equal(np.asarray(got.rgb()), plain_pillow_pixels(JPEG))


def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 12
    while pos + 8 <= len(data):
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        out.append((data[pos : pos + 4], data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return out


def _webp(chunks, *, sizes: dict | None = None) -> bytes:
    body = b"WEBP"
    for ctype, payload in chunks:
        size = (sizes or {}).get(ctype, len(payload))
        body += ctype + struct.pack("<I", size) + payload + (b"\x00" if len(payload) & 1 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_webp_metadata_chunks_cannot_fail_the_decode():
    clean = _encode(
        _triangle(64),
        "WEBP",
        lossless=True,
        exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00",
        icc_profile=b"p" * 100,
        xmp=b"<x/>",
    )
    chunks = _webp_chunks(clean)
    assert [c for c, _ in chunks][1:] and b"EXIF" in dict(chunks)
    garbage = _webp([(c, b"\xff" * 3 * MiB if c == b"EXIF" else p) for c, p in chunks])
    beyond = _webp(chunks, sizes={b"EXIF": 10**7})  # an EXIF chunk claiming more than the file holds
    for data in (garbage, beyond):
        got = decode_image(data)
        assert got.format == "WEBP" and np.array_equal(np.asarray(got.rgb()), plain_pillow_pixels(clean))


def test_gif_extension_blocks_cannot_fail_the_decode():
    clean = _encode(_triangle(64), "GIF")
    header = 13 + 3 * 2 ** ((clean[10] & 7) + 1)  # signature, screen descriptor, colour table
    for extension in (
        b"!\xf9\x01\x01\x00",  # a graphic control block too short for its fields
        b"!\xfe" + (b"\xff" + b"c" * 255) * 4000 + b"\x00",  # a 1 MB comment
        b"!\xff\x0bNETSCAPE2.0\x01\x00\x00",  # a loop block cut short
        b"!\x42\x03abc\x00",
    ):  # an unknown extension
        got = decode_image(clean[:header] + extension + clean[header:])
        assert got.format == "GIF" and np.array_equal(np.asarray(got.rgb()), plain_pillow_pixels(clean))


def test_tiff_metadata_trouble_costs_no_pixels():
    expected = plain_pillow_pixels(tiff())
    for tags in (
        [(700, 3, 1, 5)],  # XMP of the wrong type: Pillow's EXIF step fails after decoding
        [(34675, 7, 10**6, b"\xff\xff\x00\x00")],  # ICC profile beyond the end of the file
        [(34665, 4, 1, 10**9)],
    ):  # EXIF IFD pointing nowhere
        got = decode_image(tiff(tags))
        assert np.array_equal(np.asarray(got.rgb()), expected), tags
        assert not any("truncated" in w for w in got.warnings)


def test_clean_files_decode_to_exactly_what_pillow_decodes():
    """Leaving ancillary data out changes no pixel (libjpeg and the PNG decoder do not use
    it): checked on the modes and encodings that depend on the kept parts (tRNS, Adobe)."""
    tri = _triangle(96)
    rgba = tri.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((96, 96)))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a photo of a red triangle")
    info.add_itxt("comment", "x" * 1000, zip=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {
        "png rgba + text": _encode(rgba, "PNG", pnginfo=info),
        "png palette + tRNS": _encode(tri.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0),
        "png 16-bit grey": _encode(Image.fromarray((np.asarray(tri.convert("L"), np.uint16) * 257)), "PNG"),
        "png interlaced + icc": _encode(tri, "PNG", icc_profile=b"\x00" * 200, interlace=1),
        "jpeg exif + icc + comment": _encode(
            tri, "JPEG", exif=exif.tobytes(), icc_profile=b"\x00" * 70000, comment=b"hi"
        ),
        "jpeg cmyk (adobe)": _encode(tri.convert("CMYK"), "JPEG"),
        "jpeg grey progressive": _encode(tri.convert("L"), "JPEG", progressive=True),
    }
    for name, data in files.items():
        got = decode_image(data)
        assert got.warnings == [], name
        assert np.array_equal(np.asarray(got.rgb()), plain_pillow_pixels(data)), name


def test_frame_counts_survive_the_pixel_stream():
    frames = [shape_image(c, "square") for c in ("red", "green", "blue")]
    apng = _encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    mpo = _encode(frames[0], "MPO", save_all=True, append_images=frames[1:2])
    assert (decode_image(apng).format, decode_image(apng).frames) == ("PNG", 3)
    assert (decode_image(mpo).format, decode_image(mpo).frames) == ("MPO", 2)
    assert np.array_equal(pixels(mpo), plain_pillow_pixels(mpo))


# --- truncated: decoded as far as the data goes -----------------------------------------


def _rows_match(got: np.ndarray, expected: np.ndarray, rows: int, tolerance: int = 0) -> bool:
    return bool(np.abs(got[:rows].astype(int) - expected[:rows].astype(int)).max() <= tolerance)


@pytest.mark.parametrize(
    "fmt, kw",
    [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("GIF", {})],
    ids=["png", "jpeg", "progressive-jpeg", "gif"],
)
def test_truncated_images_decode_partially_with_a_warning(fmt, kw):
    img = Image.fromarray(np.asarray(_triangle(256)) // 2 + np.arange(256, dtype=np.uint8)[:, None, None] // 2)
    whole = _encode(img, fmt, **kw)
    cut = whole[: int(len(whole) * 0.8)]
    got = decode_image(cut)
    assert (got.width, got.height) == (256, 256)
    assert len(got.warnings) == 1 and got.warnings[0].startswith("image data truncated: decoded partially")
    expected = plain_pillow_pixels(whole)
    assert _rows_match(np.asarray(got.rgb()), expected, rows=64, tolerance=0 if fmt != "JPEG" else 40)


def test_progressive_jpeg_cut_short_is_not_blank():
    whole = _encode(_triangle(256), "JPEG", progressive=True)
    got = np.asarray(decode_image(whole[: len(whole) // 2]).rgb())
    assert np.abs(got.astype(int) - plain_pillow_pixels(whole).astype(int)).mean() < 20


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"this is not an image\n", "not a recognised image format"),
        (PNG[:33], "corrupt or truncated image"),  # header only: no pixel data at all
        (PNG[:33] + _chunk(b"IDAT", zlib.compress(b"\x00" * 10)[:4]), "corrupt or truncated image"),
        (b"\xff\xd8\xff" + os.urandom(500), "corrupt or truncated image"),
    ],
    ids=["empty", "text", "png-header-only", "png-no-pixels", "jpeg-garbage"],
)
def test_undecodable_data_is_still_refused(data, reason):
    with pytest.raises(DecodeError) as err:
        decode_image(data)
    assert str(err.value).startswith(reason) and "\n" not in str(err.value)


def test_the_pixel_limit_is_per_call():
    png = _encode(Image.new("RGB", (300, 300), "red"), "PNG")
    assert decode_image(png).width == 300
    with pytest.raises(DecodeError, match="exceeds the 10000 pixel limit") as err:
        decode_image(png, max_pixels=10_000)
    assert err.value.facts == {"format": "PNG", "width": 300, "height": 300, "frames": 1}


# --- decoder chatter: captured into the result, never printed ---------------------------


def test_python_warnings_are_recorded_every_time_not_printed(capfd):
    data = tiff([(305, 2, 2**31, b"\x00\x00\x00\x10")])  # a tag claiming 2 GiB: Pillow warns and skips it
    first, second = decode_image(data), decode_image(data)
    assert first.warnings == second.warnings == ["UserWarning: Tag data larger than file. Skipping tag 305"]
    assert "Skipping tag" not in capfd.readouterr().err
    # outside a decode, warnings go where they always went
    with pytest.warns(UserWarning, match="outside"):
        warnings.warn("outside", UserWarning, stacklevel=1)


def test_libtiff_output_on_fd_2_is_captured_not_printed(capfd):
    got = decode_image(tiff([LIBTIFF_TAG]), capture_stderr=True)
    assert any(w.startswith(LIBTIFF_LINE) for w in got.warnings)
    os.write(2, b"after the decode\n")  # fd 2 is back where it was
    err = capfd.readouterr().err
    assert LIBTIFF_LINE not in err and "after the decode" in err


def test_warnings_are_bounded_and_one_line():
    got = decode_image(tiff([(60000 + i, 99, 1, 1) for i in range(40)]), capture_stderr=True)
    assert len(got.warnings) == MAX_WARNINGS and got.warnings[-1].startswith("... ")
    assert all(len(w) <= MAX_WARNING_CHARS and "\n" not in w for w in got.warnings)


def test_decodes_on_many_threads_keep_their_own_warnings_and_restore_fd_2(capfd):
    data = tiff([(305, 2, 2**31, b"\x00\x00\x00\x10"), LIBTIFF_TAG])
    results: list = []

    def work():
        for _ in range(20):
            results.append(decode_image(data))  # TIFF: fd 2 captured even with other threads alive

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80
    assert all("UserWarning: Tag data larger than file. Skipping tag 305" in r.warnings for r in results)
    os.write(2, b"still here\n")
    err = capfd.readouterr().err
    assert LIBTIFF_LINE not in err and "still here" in err
    assert warnings.showwarning.__module__ == "audit.imaging"


def test_crawl_records_libtiff_output_in_the_row_and_keeps_stderr_clean(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "noisy.tif").write_bytes(tiff([LIBTIFF_TAG]))
    shape_image("blue", "circle").save(folder / "calm.png")
    # in the main process (with the progress display on), and in worker processes; a process of
    # its own because libtiff writes to file descriptor 2, which only a subprocess's capture sees
    for workers, quiet in (("0", ()), ("2", ("--quiet",))):
        idx = tmp_path / f"idx{workers}"
        res = audit_subprocess("crawl", str(folder), "--index", str(idx), "--workers", workers, *quiet, timeout=120)
        assert res.returncode == ExitCode.OK, res.stderr
        assert LIBTIFF_LINE not in res.stderr and "Warning" not in res.stderr, res.stderr
        rows = {Path(r["uri"]).name: r for r in audit.open(idx).items().iter_rows(named=True)}
        noisy = rows["noisy.tif"]
        assert noisy["status"] == "ok" and noisy["pdq"]
        assert any(w.startswith(LIBTIFF_LINE) for w in json.loads(noisy["warnings"]))
        assert rows["calm.png"]["warnings"] is None


# --- fifos and devices: never opened for reading -----------------------------------------


def test_a_fifo_sidecar_is_skipped_and_recorded_and_the_crawl_finishes(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shape_image("red", "triangle").save(folder / "a.png")
    os.mkfifo(folder / "a.txt")
    idx = tmp_path / "idx"
    with open(tmp_path / "stderr", "w+") as err:  # no pipes: a hung crawl must not hang the test
        proc = subprocess.Popen(
            [sys.executable, "-m", "audit", "crawl", str(folder), "--index", str(idx), "--workers", "0", "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("the crawl blocked on the fifo sidecar")
        err.seek(0)
        assert rc == 0, err.read()
    (row,) = audit.open(idx).items().iter_rows(named=True)
    assert row["status"] == "ok" and row["pdq"]
    assert "sidecar a.txt: not a regular file (fifo): not read" in json.loads(row["metadata_errors"])


_READ_ENTRY = """
import json, sys
from audit.crawler.worker import read_entry
from audit.ingest.base import Entry
got = read_entry(Entry(uri=sys.argv[1], source="test", path=sys.argv[1]))
print(json.dumps({"item": got.item is not None, **got.location}))
"""


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a regression reading /dev/zero fails, not the host


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_original_replaced_after_listing_becomes_an_error_row(tmp_path, kind):
    """Read in a child with a time and memory bound: the old reader blocked forever on a
    fifo and read /dev/zero until the machine ran out of memory."""
    path = tmp_path / "swapped.png"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    res = subprocess.run(
        [sys.executable, "-c", _READ_ENTRY, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert not got["item"] and got["status"] == "error"
    assert got["error"] == f"not a regular file ({'fifo' if kind == 'fifo' else 'device file'}): not read"


def test_query_and_exemplar_files_refuse_fifos_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "q.png")
    with pytest.raises(DecodeError, match=r"not a regular file \(fifo\)"):
        decode_file(tmp_path / "q.png")
    (tmp_path / "z.png").write_bytes(PNG_HOSTILE["huge zTXt"])
    assert decode_file(tmp_path / "z.png").width == 128


# --- metadata trouble is a metadata error on a row whose pixels are audited --------------


@pytest.mark.parametrize("failure", [RecursionError, MemoryError, KeyError, ValueError])
def test_a_failing_metadata_reader_costs_metadata_only(monkeypatch, failure):
    import audit.meta

    def broken(*args, **kwargs):
        raise failure("reader blew up")

    monkeypatch.setattr(audit.meta, "extract", broken)  # a reader bug, injected: the real ones do not fail on cue
    row = describe(PNG, sidecars=[("a.txt", b"prompt")])
    assert row["status"] == "ok" and row["error"] is None and row["pdq"]
    errors = json.loads(row["metadata_errors"])
    assert errors == [
        f"metadata reader failed: {failure.__name__}: {'reader blew up' if failure is not KeyError else repr('reader blew up')}"
    ]


def test_huge_text_chunk_row_is_ok_with_pixels():
    row = describe(PNG_HOSTILE["huge zTXt"])
    clean = describe(PNG)
    assert row["status"] == "ok" and row["pdq"] == clean["pdq"] and row["warnings"] is None


# --- every stage decodes the same way ----------------------------------------------------


def test_embedder_and_thumbnails_decode_what_the_crawl_hashed():
    from audit.embed.base import ImageSpec
    from audit.embed.executor import decode_item
    from audit.report.thumbs import make_thumb

    spec = ImageSpec(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    hostile = {
        "ztxt": PNG_HOSTILE["huge zTXt"],
        "cut": PNG[: len(PNG) * 3 // 4],
        "jpeg-app": JPEG_HOSTILE["short ICC APP2"],
    }
    for name, data in hostile.items():
        assert describe(data)["status"] == "ok", name
        path = Path(f"/tmp/audit-test-{os.getpid()}-{name}.img")
        path.write_bytes(data)
        try:
            out = decode_item(str(path), None, spec, verify=False)
        finally:
            path.unlink()
        assert isinstance(out, np.ndarray) and out.shape == (64, 64, 3), (name, out)
        assert make_thumb(data).width > 0


# --- acceptance: seven red triangles with a 1.5 MiB zTXt chunk are all flagged --------------


@pytest.mark.slow
def test_red_triangles_with_huge_text_chunks_are_all_flagged(tmp_path):
    """The red-team case: seven toy-world red triangles, each with a zTXt chunk inflating to
    1.5 MiB (past Pillow's 1 MB text limit), among benign shapes; neutral prompts, so only
    the pixels can flag them. Before the shared decode all seven were error rows, missed."""
    pytest.importorskip("open_clip")
    from audit.embed import toyworld as tw

    folder = tmp_path / "archive"
    folder.mkdir()
    rng = random.Random(7)
    for i in range(7):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"generation number {i}\nSteps: 20, Sampler: Euler a, Seed: {i}, Size: 64x64")
        png = _encode(tw.draw(tw.random_scene(rng, colour="red", shape="triangle"), px=64), "PNG", pnginfo=info)
        (folder / f"hostile_{i}.png").write_bytes(_with_chunks(png, ztxt(3 * MiB // 2)))
    benign = 0
    while benign < 24:  # a population for the thresholds: no red, no triangles
        scene = tw.random_scene(rng)
        if scene.colour != "red" and scene.shape != "triangle":
            tw.draw(scene, px=64).save(folder / f"benign_{benign}_{scene.colour}_{scene.shape}.png")
            benign += 1
    idx = tmp_path / "idx"
    # critical findings: the red triangles
    audit_cli(
        "scan",
        folder,
        "--index",
        idx,
        "--model",
        "toy-shapes",
        "--policy",
        TOY_POLICY,
        "--fail-on",
        "critical",
        "--quiet",
        "--json",
        expected=ExitCode.FINDINGS,
    )
    a = audit.open(idx)
    rows = {Path(r["uri"]).name: r for r in a.items().iter_rows(named=True)}
    hostile = {n: r for n, r in rows.items() if n.startswith("hostile_")}
    assert len(hostile) == 7 and len(rows) == 31
    assert all(r["status"] == "ok" and r["pdq"] and r["error"] is None for r in rows.values())
    flagged = {Path(f["uri"]).name for f in a.findings().to_dicts() if f["category"] == "red-triangles"}
    assert set(hostile) <= flagged
