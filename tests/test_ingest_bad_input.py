"""Bad input that belongs to sources: each becomes an Entry with ``error`` (a catalog row with
status=error and a reason) and the listing goes on; a SOURCE that cannot be used at all is
an ``InputError`` with one line."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tarfile
import threading
import uuid
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from audit.errors import InputError
from audit.ingest import ArchiveSource, ContainerDone, Entry, open_source, safe_uri


def png(colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


def never(uri: str, size: int, mtime_ns: int) -> bool:
    return False


def listed(spec: str) -> list:
    return list(open_source(spec).entries(never))


def entries(spec: str) -> list[Entry]:
    return [e for e in listed(spec) if isinstance(e, Entry)]


def errors(spec: str) -> dict[str, str]:
    return {e.uri: e.error for e in entries(spec) if e.error}


def run_with_timeout(fn, seconds: float = 20.0):
    """Run ``fn`` in a thread: a walk that hangs (fifo opened, endless loop) fails the test
    instead of hanging the suite."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "listing did not finish: it hangs or loops"
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- SOURCE itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "/no/such/dir",
        "/no/such/file.jsonl",
        "/no/such/a.tar",
        "memory:///no-such-prefix-xyz",
        "nosuchscheme://bucket/x",
    ],
)
def test_unusable_source_is_one_line_input_error(spec: str) -> None:
    with pytest.raises(InputError) as info:
        open_source(spec)
    assert "\n" not in str(info.value) and str(info.value)


def test_empty_source_is_input_error() -> None:
    with pytest.raises(InputError):
        open_source("")


def test_fifo_as_source_is_input_error(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(InputError, match="neither a directory nor a regular file"):
        open_source(str(tmp_path / "pipe.png"))


# --- non-UTF-8 names ----------------------------------------------------------------------


def test_safe_uri() -> None:
    assert safe_uri("/data/a b/ç.png") == "/data/a b/ç.png"  # valid text unchanged
    name = os.fsdecode(b"/data/bad\xff\xfe.png")
    assert safe_uri(name) == "/data/bad%FF%FE.png"
    assert safe_uri("x\ud800y") == "x%ED%A0%80y"  # any lone surrogate
    safe_uri(name).encode("utf-8")


def test_non_utf8_file_name(tmp_path: Path) -> None:
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9-\xff.png"  # latin-1 bytes: not UTF-8
    with open(raw, "wb") as fh:
        fh.write(png())
    with open(os.fsencode(str(tmp_path)) + b"/caf\xe9-\xff.txt", "wb") as fh:
        fh.write(b"a red square")
    [e] = entries(str(tmp_path))
    assert e.error is None
    assert e.uri == f"{tmp_path}/caf%E9-%FF.png"
    assert os.fsencode(e.path) == raw  # the real path, for reading
    with open(e.path, "rb") as fh:
        assert fh.read() == png()
    assert [s.name for s in e.sidecars] == [os.fsdecode(b"caf\xe9-\xff.txt")]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (uri TEXT PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES (?)", (e.uri,))  # would raise with the surrogates


def test_non_utf8_member_name(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as tf:
        info = tarfile.TarInfo(os.fsdecode(b"bad\xff.png"))
        data = png()
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    [e] = entries(str(path))
    assert e.error is None and e.uri == f"{path}!/bad%FFpng".replace("%FFpng", "%FF.png")
    e.uri.encode("utf-8")


# --- unreadable, fifo, symlinks -----------------------------------------------------------


def test_fifo_with_image_name_is_not_opened(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(png())
    os.mkfifo(tmp_path / "pipe.png")
    found = run_with_timeout(lambda: errors(str(tmp_path)))
    assert found == {str(tmp_path / "pipe.png"): "not a regular file (fifo): not read"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 directory anyway; covered by the loop/fifo cases")
def test_unreadable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.png").write_bytes(png())
    (tmp_path / "b.png").write_bytes(png())
    locked.chmod(0)
    try:
        found = errors(str(tmp_path))
    finally:
        locked.chmod(0o755)
    assert found == {str(locked): "unreadable directory: Permission denied"}


def test_unreadable_directory_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as root, whom permissions do not stop: make scandir fail as it would."""
    import audit.ingest.folder as folder

    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.png").write_bytes(png())
    (tmp_path / "b.png").write_bytes(png())
    real = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(folder.os, "scandir", scandir)
    got = entries(str(tmp_path))
    assert {e.uri: e.error for e in got} == {
        str(tmp_path / "b.png"): None,
        str(locked): "unreadable directory: Permission denied",
    }


def test_directory_symlink_loop_is_finite(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.png").write_bytes(png())
    os.symlink("../..", tmp_path / "a" / "b" / "up")  # points back at the root
    os.symlink(".", tmp_path / "a" / "self")
    got = run_with_timeout(lambda: entries(str(tmp_path)))
    ok = [e.uri for e in got if not e.error]
    assert ok == [str(tmp_path / "a" / "b" / "x.png")]
    bad = {e.uri: e.error for e in got if e.error}
    assert set(bad) == {str(tmp_path / "a" / "b" / "up"), str(tmp_path / "a" / "self")}
    assert all("already walked" in why for why in bad.values())


def test_symlink_to_file_is_followed_and_broken_or_looping_links_are_errors(tmp_path: Path) -> None:
    (tmp_path / "real.png").write_bytes(png())
    os.symlink("real.png", tmp_path / "alias.png")
    os.symlink("missing.png", tmp_path / "gone.png")
    os.symlink("loop.png", tmp_path / "loop.png")
    os.symlink("nowhere", tmp_path / "noext")
    got = {e.uri: e for e in entries(str(tmp_path))}
    assert got[str(tmp_path / "alias.png")].error is None  # uri keeps the link's own path
    assert got[str(tmp_path / "alias.png")].size == len(png())
    assert got[str(tmp_path / "gone.png")].error.startswith("broken symlink")
    assert got[str(tmp_path / "loop.png")].error == "symlink loop"
    assert got[str(tmp_path / "noext")].error.startswith("broken symlink")


# --- archives -----------------------------------------------------------------------------


def _evil_tar(path: Path) -> None:
    data = png()
    with tarfile.open(path, "w") as tf:
        for name in ("../escape.png", "/abs.png", "a/../../up.png", "ok.png"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
        hard = tarfile.TarInfo("hard.png")
        hard.type = tarfile.LNKTYPE
        hard.linkname = "ok.png"
        tf.addfile(hard)
        dev = tarfile.TarInfo("dev.png")
        dev.type = tarfile.CHRTYPE
        tf.addfile(dev)


def test_unsafe_tar_members(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    _evil_tar(work / "evil.tar")
    before = sorted(p for p in tmp_path.rglob("*"))
    got = listed(str(work / "evil.tar"))
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    assert isinstance(got[-1], ContainerDone)  # the archive itself is fine
    es = {e.uri.split("!/", 1)[1]: e for e in got if isinstance(e, Entry)}
    assert es["ok.png"].error is None and es["ok.png"].data == png()
    for name in ("../escape.png", "/abs.png", "a/../../up.png", "link.png", "hard.png", "dev.png"):
        assert es[name].error.startswith("unsafe member path"), name
        assert es[name].data is None
    assert "absolute" in es["/abs.png"].error and "'..'" in es["../escape.png"].error


def test_unsafe_zip_members(tmp_path: Path) -> None:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("../escape.png", png())
        zf.writestr(zipfile.ZipInfo("/abs.png"), png())
        link = zipfile.ZipInfo("link.png")
        link.create_system = 3
        link.external_attr = (0o120777) << 16  # S_IFLNK
        zf.writestr(link, "/etc/passwd")
        zf.writestr("ok.png", png())
    es = {e.uri.split("!/", 1)[1]: e for e in entries(str(path))}
    assert es["ok.png"].error is None
    for name in ("../escape.png", "/abs.png", "link.png"):
        assert es[name].error.startswith("unsafe member path"), name
        assert es[name].data is None


def _tar_of(n: int, size: int = 3000) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(n):
            data = bytes([i]) * size
            info = tarfile.TarInfo(f"{i:03d}.png")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("cut", ["mid-data", "at-header"])
def test_truncated_tar(tmp_path: Path, cut: str) -> None:
    whole = _tar_of(6)
    # each member: 512 header + 3072 data (3000 padded); cut inside member 3's data or exactly after member 2
    at = 3 * 3584 + 512 + 100 if cut == "mid-data" else 3 * 3584
    path = tmp_path / "cut.tar"
    path.write_bytes(whole[:at])
    got = listed(str(path))
    assert not any(isinstance(x, ContainerDone) for x in got)
    ok = [e for e in got if isinstance(e, Entry) and not e.error]
    assert [e.uri.rsplit("!/", 1)[1] for e in ok] == ["000.png", "001.png", "002.png"]  # read so far: kept
    last = got[-1]
    assert isinstance(last, Entry) and last.uri == str(path) and "truncated" in last.error


def test_truncated_tar_gz_and_garbage(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(20):
            data = os.urandom(4000)
            info = tarfile.TarInfo(f"{i:03d}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    (tmp_path / "cut.tar.gz").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "junk.tgz").write_bytes(b"this is not a gzip file at all")
    (tmp_path / "empty.tar").write_bytes(b"")
    for name in ("cut.tar.gz", "junk.tgz", "empty.tar"):
        got = listed(str(tmp_path / name))
        assert not any(isinstance(x, ContainerDone) for x in got), name
        assert isinstance(got[-1], Entry) and got[-1].uri == str(tmp_path / name) and got[-1].error, name


def test_empty_but_valid_archives(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    for name in ("empty.tar", "empty.zip"):
        got = listed(str(tmp_path / name))
        assert len(got) == 1 and isinstance(got[0], ContainerDone), (name, got)


def test_truncated_zip(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(5):
            zf.writestr(f"{i}.png", png())
    blob = buf.getvalue()
    (tmp_path / "cut.zip").write_bytes(blob[: len(blob) - 40])  # central directory damaged
    got = listed(str(tmp_path / "cut.zip"))
    assert len(got) == 1 and got[0].error and got[0].uri == str(tmp_path / "cut.zip")


def test_member_over_cap_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "big.tar"
    path.write_bytes(_tar_of(3, size=5000))
    src = ArchiveSource.local(str(path), str(path), max_member_bytes=4000)
    got = [e for e in src.entries(never) if isinstance(e, Entry)]
    assert len(got) == 3 and all(e.data is None and "too large" in e.error for e in got)


def test_corrupt_archive_inside_folder_does_not_stop_the_walk(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 broken")
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "b.png").write_bytes(png("blue"))
    got = entries(str(tmp_path))
    assert {e.uri for e in got if not e.error} == {str(tmp_path / "a.png"), str(tmp_path / "z" / "b.png")}
    assert {e.uri for e in got if e.error} == {str(tmp_path / "bad.zip")}


# --- manifests ----------------------------------------------------------------------------


def test_manifest_missing_path_column(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text(json.dumps({"prompt": "x", "seed": 1}) + "\n")
    (tmp_path / "m.csv").write_text("prompt,seed\nx,1\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["x"], "seed": [1]}), tmp_path / "m.parquet")
    for name in ("m.jsonl", "m.csv", "m.parquet"):
        with pytest.raises(InputError) as info:
            open_source(str(tmp_path / name))
        msg = str(info.value)
        assert "\n" not in msg and "no path column" in msg and "prompt, seed" in msg, msg


def test_manifest_unreadable_formats(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    for name in ("empty.csv", "junk.parquet"):
        with pytest.raises(InputError):
            open_source(str(tmp_path / name))


def test_manifest_bad_rows_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    lines = [
        json.dumps(
            {"path": "a.png", "prompt": "a red square", "seed": 12, "cfg_scale": "7.5", "steps": "20", "lora": "x"}
        ),
        "{not json",
        json.dumps({"path": ""}),
        json.dumps(["a", "list"]),
        "",
        json.dumps({"path": "missing.png"}),
        json.dumps({"FilePath": str(tmp_path / "a.png")}),  # other rows may spell it otherwise
    ]
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(lines) + "\n")
    got = entries(str(m))
    by = {e.uri: e for e in got}
    assert got[0].uri == str(tmp_path / "a.png") and got[0].fields == {
        "prompt": "a red square",
        "seed": "12",
        "cfg_scale": 7.5,
        "steps": 20,
        "lora": "x",
    }
    assert by[f"{m}#row=2"].error.startswith("bad row: invalid JSON")
    assert by[f"{m}#row=3"].error.startswith("bad row: empty path")
    assert by[f"{m}#row=4"].error.startswith("bad row")
    assert by[str(tmp_path / "missing.png")].error == "file not found"
    assert len(got) == 6  # the blank line is no row; row 7 lists a.png again
    assert got[-1].uri == str(tmp_path / "a.png") and got[-1].error is None and got[-1].fields == {}
    assert all(e.container == str(m) for e in got)


def test_csv_manifest_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png())
    m = tmp_path / "m.csv"
    m.write_text("Image,Prompt,Negative Prompt,Seed\nimgs/a.png,a cat,blurry,5\n,empty,,\nimgs/nope.png,x,,\n")
    got = {e.uri: e for e in entries(str(m))}
    assert got[str(tmp_path / "imgs" / "a.png")].fields == {"prompt": "a cat", "negative_prompt": "blurry", "seed": "5"}
    assert got[f"{m}#row=3"].error.startswith("bad row: empty path")
    assert got[str(tmp_path / "imgs" / "nope.png")].error == "file not found"


def test_parquet_manifest_embedded_bytes_and_missing(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    m = tmp_path / "hf.parquet"
    rows = [
        {"image": {"bytes": png(), "path": "x.png"}, "prompt": "a red square"},
        {"image": {"bytes": None, "path": "nope.png"}, "prompt": "gone"},
        {"image": None, "prompt": "no path"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), m)
    got = entries(str(m))
    assert got[0].uri == f"{m}#row=1" and got[0].data == png() and got[0].fields["prompt"] == "a red square"
    assert got[1].uri == str(tmp_path / "nope.png") and got[1].error == "file not found"
    assert got[2].uri == f"{m}#row=3" and got[2].error.startswith("bad row: empty path")


def test_remote_manifest_rows_missing(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    prefix = f"/man-{uuid.uuid4().hex}"
    fs.pipe(f"{prefix}/a.png", png())
    fs.pipe(f"{prefix}/m.jsonl", (json.dumps({"path": "a.png"}) + "\n" + json.dumps({"path": "b.png"}) + "\n").encode())
    got = {e.uri: e for e in entries(f"memory://{prefix}/m.jsonl")}
    assert got[f"memory://{prefix}/a.png"].data == png()
    assert got[f"memory://{prefix}/b.png"].error == "file not found"


def test_fsspec_object_over_cap(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    prefix = f"/cap-{uuid.uuid4().hex}"
    fs.pipe(f"{prefix}/big.png", b"x" * 5000)
    fs.pipe(f"{prefix}/small.png", png())
    src = open_source(f"memory://{prefix}", max_member_bytes=4000)
    got = {e.uri.rsplit("/", 1)[1]: e for e in src.entries(never)}
    assert got["big.png"].data is None and "too large" in got["big.png"].error
    assert got["small.png"].data == png()
