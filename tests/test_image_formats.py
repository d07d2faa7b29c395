"""Every format the crawler lists decodes through the one decode path; what cannot be
decoded (a cut file, a missing optional decoder) is a recorded skip with its reason."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile

import pytest
from PIL import Image

import audit
from audit import image_formats
from audit.imaging import DecodeError, decode_image

RED = (200, 30, 30)


def _toy(size=(64, 48)) -> Image.Image:
    """A red square on white: distinct enough that a wrong decode shows in the pixels."""
    im = Image.new("RGB", size, (255, 255, 255))
    im.paste(RED, (8, 8, 40, 40))
    return im


def encode(fmt: str, im: Image.Image | None = None) -> bytes:
    im = im or _toy()
    buf = io.BytesIO()
    # the test files are written with the optional decoders' own encoders: without the
    # `formats` extra those tests skip (what the product does then is tested below)
    if fmt == "HEIF":
        pillow_heif = pytest.importorskip("pillow_heif", reason="needs the formats extra to write HEIF")
        pillow_heif.from_pillow(im).save(buf, format="HEIF", quality=90)
    else:
        if fmt == "JXL":
            pytest.importorskip(
                "pillow_jxl", reason="needs the formats extra to write JPEG XL"
            )  # registers the encoder
        im.save(buf, fmt, **({"quality": 90} if fmt in ("AVIF", "JPEG") else {}))
    return buf.getvalue()


FORMATS = [
    ("HEIF", "HEIF", "heic"),
    ("AVIF", "AVIF", "avif"),
    ("JXL", "JXL", "jxl"),
    ("TIFF", "TIFF", "tif"),
    ("BMP", "BMP", "bmp"),
    ("GIF", "GIF", "gif"),
    ("JPEG", "JPEG", "jfif"),
]


@pytest.mark.parametrize("fmt,name,ext", FORMATS)
def test_each_format_decodes_to_the_picture(fmt, name, ext):
    d = decode_image(encode(fmt))
    assert (d.format, d.width, d.height) == (name, 64, 48)
    rgb = d.rgb()
    inside, outside = rgb.getpixel((20, 20)), rgb.getpixel((55, 40))
    assert all(abs(a - b) <= 12 for a, b in zip(inside, RED)), inside
    assert min(outside) >= 240, outside


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF", "JXL"])
def test_cut_container_formats_are_a_decode_error_not_a_crash(fmt):
    data = encode(fmt)
    for cut in (len(data) // 2, 24):
        with pytest.raises(DecodeError) as err:
            decode_image(data[:cut])
        assert "\n" not in str(err.value) and "corrupt or truncated" in str(err.value)


def test_signature_not_the_name_decides():
    assert image_formats.container_kind(encode("HEIF")) == "HEIF"
    assert image_formats.container_kind(encode("AVIF")) == "AVIF"  # AVIF lists mif1 too
    assert image_formats.container_kind(encode("JXL")) == "JPEG XL"
    assert image_formats.container_kind(encode("BMP")) is None


def test_missing_plugin_is_a_skip_naming_the_extra():
    """In a fresh interpreter where pillow_heif cannot be imported, a HEIC is a one-line
    skip naming ``audit[formats]``; importing audit does not import either plugin."""
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "import audit, audit.imaging as im\n"
        "assert 'pillow_jxl' not in sys.modules\n"
        "try:\n"
        "    im.decode_image(open(sys.argv[1], 'rb').read())\n"
        "except im.DecodeError as e:\n"
        "    print('SKIP', e, e.facts)\n"
    )
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".heic") as fh:
        fh.write(encode("HEIF"))
        fh.flush()
        out = subprocess.run(
            [sys.executable, "-c", code, fh.name], capture_output=True, text=True, timeout=60, check=False
        )
    assert out.returncode == 0, out.stderr
    assert "SKIP HEIF/HEIC image: no decoder installed (install audit[formats]: pillow-heif)" in out.stdout
    assert "'format': 'HEIF'" in out.stdout


def test_crawl_lists_every_name_and_records_bad_ones(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = {
        "a.heic": "HEIF",
        "b.heif": "HEIF",
        "c.hif": "HEIF",
        "d.avif": "AVIF",
        "e.jxl": "JXL",
        "f.tiff": "TIFF",
        "g.bmp": "BMP",
        "h.gif": "GIF",
        "i.jfif": "JPEG",
    }
    for i, (name, fmt) in enumerate(good.items()):
        (src / name).write_bytes(encode(fmt, _toy((64 + i, 48))))  # distinct content each
    (src / "cut.heic").write_bytes(encode("HEIF")[:200])
    summary = audit.crawl([str(src)], tmp_path / "idx", workers=0)
    items = audit.open(tmp_path / "idx").items()
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in items.iter_rows(named=True)}
    assert set(rows) == {*good, "cut.heic"}
    for name, fmt in good.items():
        assert rows[name]["status"] == "ok" and rows[name]["format"] == fmt, (name, rows[name]["error"])
        assert len(rows[name]["pdq"]) == 64
    assert rows["cut.heic"]["status"] == "error" and "HEIF" in rows["cut.heic"]["error"]
    assert summary.errors == 1


def test_tar_zst_archive_is_crawled_and_a_corrupt_one_recorded(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tf:
        for i, fmt in enumerate(["PNG", "HEIF"]):
            data = encode(fmt, _toy((64 + i, 48)))
            ti = tarfile.TarInfo(f"shard/{i:04d}.{'png' if fmt == 'PNG' else 'heic'}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    packed = zstandard.ZstdCompressor().compress(tar_bytes.getvalue())
    (tmp_path / "good.tar.zst").write_bytes(packed)
    (tmp_path / "bad.tar.zst").write_bytes(packed[:20] + b"\x00" * 64 + packed[84:])
    audit.crawl([str(tmp_path / "good.tar.zst"), str(tmp_path / "bad.tar.zst")], tmp_path / "idx", workers=0)
    locs = audit.open(tmp_path / "idx").items()
    ok = locs.filter(locs["status"] == "ok")
    assert sorted(ok["format"].to_list()) == ["HEIF", "PNG"]
    assert all("good.tar.zst!/" in u for u in ok["uri"])
    bad = locs.filter(locs["uri"].str.contains("bad.tar.zst"))
    assert bad.height >= 1 and (bad["status"] == "error").any()
    assert any("zstd" in (e or "") or "corrupt" in (e or "") for e in bad["error"].to_list())
