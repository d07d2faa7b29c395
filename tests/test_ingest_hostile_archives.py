"""Archives built by the people being audited: duplicate member names, nested archives,
expansion bombs and fifos. Every member is its own location, every skip has a reason, and
what the crawl catalogued is read back by ``read_uri`` at exactly that uri."""

from __future__ import annotations

import io
import os
import random
import tarfile
import threading
import warnings
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import audit
from audit.ingest import ArchiveSource, ContainerDone, Entry, open_source
from audit.ingest.members import MemberNamer
from audit.ingest.reader import ReadError, _ARCHIVES, read_uri

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "cyan", "magenta", "white", "black"]


def png(colour: str = "red", size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def never(uri: str, size: int, mtime_ns: int) -> bool:
    return False


def tar_bytes(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    """A tar (``mode`` "w", "w:gz", ...) of members in this order, duplicates allowed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names, and writes them
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


def archive_bytes(kind: str, members: list[tuple[str, bytes]]) -> bytes:
    if kind == "zip":
        return zip_bytes(members)
    return tar_bytes(members, {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}[kind])


def listed(spec: str, **kw) -> list:
    return list(open_source(spec, **kw).entries(never))


def entries(spec: str, **kw) -> list[Entry]:
    return [e for e in listed(spec, **kw) if isinstance(e, Entry)]


def run_with_timeout(fn, seconds: float = 20.0):
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "did not finish: it blocks (a fifo opened?) or loops"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture(autouse=True)
def _fresh_reader():
    _ARCHIVES.clear()  # archives rewritten within a second must not be served from the cache
    yield
    _ARCHIVES.clear()


# --- 1. duplicate member names ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_duplicate_member_names_are_distinct_locations_read_back_exactly(tmp_path: Path, kind: str) -> None:
    red, blue, green, yellow = png("red"), png("blue"), png("green"), png("yellow")
    members = [("a.png", red), ("b/c.png", yellow), ("a.png", blue), ("./a.png", green)]  # "./a.png" is "a.png" too
    path = tmp_path / f"dups.{kind}"
    path.write_bytes(archive_bytes(kind, members))
    got = [e for e in entries(str(path))]
    assert [e.error for e in got] == [None] * 4
    uris = [e.uri for e in got]
    assert uris == [f"{path}!/a.png", f"{path}!/b/c.png", f"{path}!/a.png#3", f"{path}!/a.png#4"]
    assert [e.data for e in got] == [red, yellow, blue, green]
    for e in got:  # the re-reader resolves each uri to exactly that member
        assert read_uri(e.uri) == e.data


LINK = object()  # a symbolic-link member: never followed, but it has a row (an error) under its name


def _with_links(kind: str, members: list[tuple[str, object]]) -> bytes:
    buf = io.BytesIO()
    if kind == "tar":
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for name, data in members:
                info = tarfile.TarInfo(name)
                if data is LINK:
                    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                    tf.addfile(info)
                else:
                    info.size = len(data)  # type: ignore[arg-type]
                    tf.addfile(info, io.BytesIO(data))  # type: ignore[arg-type]
        return buf.getvalue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in members:
                if data is LINK:
                    info = zipfile.ZipInfo(name)
                    info.create_system, info.external_attr = 3, 0o120777 << 16
                    zf.writestr(info, "/etc/passwd")
                else:
                    zf.writestr(name, data)  # type: ignore[arg-type]
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_member_names_an_adversary_picks_cannot_collide(tmp_path: Path, kind: str) -> None:
    """Names chosen to collide with the duplicate marks and with the nesting separator."""
    members: list[tuple[str, object]] = [
        ("a.png", png("red")),
        ("a.png#3", LINK),  # takes the name the duplicate at position 3 would get
        ("a.png", png("blue")),  # position 3
        ("a.png#3#3", LINK),
        ("a.png", png("green")),  # position 5
        ("x!/y.png", png("yellow")),  # "!/" inside a name must not look like a nested archive
        ("x%21/y.png", png("purple")),
        ("x!/y.png", png("orange")),
    ]
    path = tmp_path / f"evil.{kind}"
    path.write_bytes(_with_links(kind, members))
    got = entries(str(path))
    assert len(got) == len(members)
    names = [e.uri[len(f"{path}!/") :] for e in got]
    assert len(set(names)) == len(names), names
    assert names[:3] == ["a.png", "a.png#3", "a.png#3#3"] and names[3] == "a.png#3#3#4"
    assert all("!/" not in n for n in names)  # "!/" only ever separates archives
    for e, (_, data) in zip(got, members):
        if data is LINK:
            assert e.error.startswith("unsafe member path") and e.data is None
        else:
            assert e.error is None and e.data == data and read_uri(e.uri) == data


def test_member_namer_is_injective_on_hostile_name_sets() -> None:
    rng = random.Random(7)
    alphabet = ["a", "#", "1", "2", "3", "!", "/", ".png", "./", "%21"]
    for _ in range(50):
        namer = MemberNamer()
        raw = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(200)]
        named = [namer.name(n) for n in raw]
        assert len(set(named)) == len(named)
        again = MemberNamer()
        assert [again.name(n) for n in raw] == named  # deterministic: the re-reader agrees


@pytest.mark.slow  # loads the toy embedding model
def test_duplicates_are_crawled_and_embedded_each(tmp_path: Path) -> None:
    from tests.embed_fixtures import random_toy_checkpoint, toy_scene_archive

    imgs = [p.read_bytes() for p in toy_scene_archive(tmp_path / "imgs", 6)]
    for kind in ("tar", "tar.gz", "zip"):
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / f"dups.{kind}").write_bytes(
            archive_bytes(kind, [("gen/0001.png", imgs[0]), ("gen/0001.png", imgs[1])])
        )
    (tmp_path / "src" / "dups.zip").write_bytes(zip_bytes([("gen/0001.png", imgs[2]), ("gen/0001.png", imgs[3])]))
    (tmp_path / "src" / "dups.tar.gz").write_bytes(
        tar_bytes([("gen/0001.png", imgs[4]), ("gen/0001.png", imgs[5])], "w:gz")
    )
    idx = tmp_path / "idx"
    summary = audit.crawl([str(tmp_path / "src")], idx, workers=0)
    assert summary.errors == 0 and summary.read == 6
    a = audit.open(idx)
    try:
        uris = sorted(r[0] for r in a.catalog.query("SELECT uri FROM locations WHERE present=1"))
        assert len(uris) == 6 and sum(u.endswith("0001.png#2") for u in uris) == 3
        ckpt = random_toy_checkpoint(tmp_path / "toy.safetensors")
        s = a.embed(model="toy-shapes", pretrained=None, checkpoint=str(ckpt), workers=0)
        assert (s.images_embedded, s.images_skipped) == (6, 0), s.skip_examples
    finally:
        a.close()


# --- 2. nested archives ---------------------------------------------------------------------


def _nested_outer(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """outer.zip holding a tar (with a sidecar), an odd-case .TAR.GZ holding a zip, a '.tgz',
    a README (ignored) and a loose image."""
    a, d, t, loose = png("red"), png("blue"), png("green"), png("yellow")
    deeper = zip_bytes([("d.png", d)])
    members = [
        ("inner.tar", tar_bytes([("a.png", a), ("a.txt", b"a red square"), ("README.md", b"not an image")])),
        ("sub/X.TAR.GZ", tar_bytes([("deeper.zip", deeper)], "w:gz")),
        (".tgz", tar_bytes([("t.png", t)], "w:gz")),
        ("loose.png", loose),
        ("README.md", b"ignored"),
    ]
    outer = tmp_path / "tree" / "outer.zip"
    outer.parent.mkdir(parents=True, exist_ok=True)
    outer.write_bytes(zip_bytes(members, zipfile.ZIP_DEFLATED))
    expected = {
        f"{outer}!/inner.tar!/a.png": a,
        f"{outer}!/sub/X.TAR.GZ!/deeper.zip!/d.png": d,
        f"{outer}!/.tgz!/t.png": t,
        f"{outer}!/loose.png": loose,
    }
    return outer, expected


def test_nested_archives_are_opened_and_read_back(tmp_path: Path) -> None:
    outer, expected = _nested_outer(tmp_path)
    got = listed(str(tmp_path / "tree"))
    es = {e.uri: e for e in got if isinstance(e, Entry)}
    assert {u: e.data for u, e in es.items()} == expected
    assert all(e.error is None for e in es.values())
    inner = es[f"{outer}!/inner.tar!/a.png"]
    assert [(s.name, s.data) for s in inner.sidecars] == [("a.txt", b"a red square")]
    assert inner.container == f"{outer}!/inner.tar"
    assert [x for x in got if isinstance(x, ContainerDone)] == [
        ContainerDone(str(outer), str(tmp_path / "tree"), *_stat(outer))
    ]
    for uri, data in expected.items():
        assert read_uri(uri) == data


def test_nested_tar_too_large_to_hold_is_read_back_by_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import audit.ingest.reader as reader

    monkeypatch.setattr(reader, "NESTED_SPOOL_BYTES", 1000)
    members = [("a.png", png("red")), ("a.png", png("blue")), ("b.png", png("green"))]
    path = tmp_path / "outer.zip"
    path.write_bytes(zip_bytes([("big.tar.gz", tar_bytes(members, "w:gz"))]))
    got = entries(str(path))
    assert [e.uri for e in got] == [
        f"{path}!/big.tar.gz!/a.png",
        f"{path}!/big.tar.gz!/a.png#2",
        f"{path}!/big.tar.gz!/b.png",
    ]
    for e, (_, data) in zip(got, members):
        assert read_uri(e.uri) == data


def test_many_images_under_one_webdataset_key_are_not_all_held(tmp_path: Path) -> None:
    """A tar of one key (or one name) repeated: images go on before the group ends."""
    members = [("k.png", os.urandom(1 << 20)) for _ in range(80)] + [("k.txt", b"a caption")]
    path = tmp_path / "one-key.tar"
    path.write_bytes(tar_bytes(members))
    opened: list = []

    def opener():
        fh = open(path, "rb")
        opened.append(fh)
        return fh

    it = ArchiveSource(str(path), str(path), opener, size=path.stat().st_size, mtime_ns=0).entries(never)
    first = next(it)
    assert isinstance(first, Entry) and first.data == members[0][1]
    assert opened[0].tell() < path.stat().st_size / 2, "the whole group was held before the first image"
    rest = [e for e in it if isinstance(e, Entry)]
    assert len(rest) == 79 and len({e.uri for e in [first, *rest]}) == 80


def test_folder_opens_archives_by_the_same_name_rule_as_members(tmp_path: Path) -> None:
    (tmp_path / ".tgz").write_bytes(tar_bytes([("a.png", png("red"))], "w:gz"))
    (tmp_path / "B.TAR.XZ").write_bytes(tar_bytes([("b.png", png("blue"))], "w:xz"))
    got = {e.uri: e.data for e in entries(str(tmp_path))}
    assert got == {f"{tmp_path}/.tgz!/a.png": png("red"), f"{tmp_path}/B.TAR.XZ!/b.png": png("blue")}


def test_nesting_deeper_than_the_limit_is_an_error_row(tmp_path: Path) -> None:
    level4 = zip_bytes([("deep.png", png("red"))])
    level3 = tar_bytes([("l4.zip", level4), ("ok3.png", png("blue"))])
    level2 = zip_bytes([("l3.tar", level3)])
    path = tmp_path / "l1.tar.gz"
    path.write_bytes(tar_bytes([("l2.zip", level2)], "w:gz"))
    got = {e.uri: e for e in entries(str(path))}
    assert got[f"{path}!/l2.zip!/l3.tar!/ok3.png"].error is None
    deep = got[f"{path}!/l2.zip!/l3.tar!/l4.zip"]
    assert "more than 3 levels" in deep.error and deep.data is None
    assert len(got) == 2
    with pytest.raises(ReadError, match="not found|levels"):
        read_uri(f"{path}!/l2.zip!/l3.tar!/l4.zip!/deep.png")


def test_corrupt_or_oversized_nested_archives_are_error_rows(tmp_path: Path) -> None:
    good = png("green")
    cut = tar_bytes([(f"{i}.png", png(COLOURS[i])) for i in range(4)], "w:gz")
    members = [
        ("bad.zip", b"PK\x03\x04 not a zip at all"),
        ("cut.tar.gz", cut[: len(cut) // 2]),
        ("big.zip", zip_bytes([("x.png", os.urandom(6000))])),
        ("good.png", good),
    ]
    path = tmp_path / "outer.tar"
    path.write_bytes(tar_bytes(members))
    got = listed(str(path), max_member_bytes=5000)
    es = {e.uri: e for e in got if isinstance(e, Entry)}
    assert es[f"{path}!/good.png"].data == good
    assert "corrupt" in es[f"{path}!/bad.zip"].error
    assert "truncated" in es[f"{path}!/cut.tar.gz"].error or "corrupt" in es[f"{path}!/cut.tar.gz"].error
    assert "cap" in es[f"{path}!/big.zip"].error
    assert isinstance(got[-1], ContainerDone)  # the outer archive itself is whole


def test_expansion_budget_stops_decompression_with_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import audit.ingest.members as members

    monkeypatch.setattr(members, "MAX_EXPANDED_BYTES", 300_000)
    monkeypatch.setattr(members, "MAX_EXPANSION_RATIO", 1)
    zeros = b"\0" * 200_000  # compresses to almost nothing
    # zip: every member still gets a row; those past the budget say why
    zpath = tmp_path / "bomb.zip"
    zpath.write_bytes(
        zip_bytes(
            [(f"{i}.png", zeros) for i in range(4)] + [("n.tar.gz", tar_bytes([("z.png", zeros)], "w:gz"))],
            zipfile.ZIP_DEFLATED,
        )
    )
    got = listed(str(zpath))
    es = [e for e in got if isinstance(e, Entry)]
    assert [e.uri.rsplit("!/", 1)[1] for e in es] == ["0.png", "1.png", "2.png", "3.png", "n.tar.gz"]
    assert es[0].data == zeros and all("expands past" in e.error for e in es[2:])
    # tar.gz: the stream stops, the archive's own row says so (and it is read again next time)
    tpath = tmp_path / "bomb.tar.gz"
    tpath.write_bytes(tar_bytes([(f"{i}.png", zeros) for i in range(4)], "w:gz"))
    got = listed(str(tpath))
    assert not any(isinstance(x, ContainerDone) for x in got)
    assert got[-1].uri == str(tpath) and "expands past" in got[-1].error
    assert [e.data for e in got[:-1] if e.data is not None] == [zeros]
    # a nested archive past the budget is an error row of its own; the outer goes on
    opath = tmp_path / "outer.tar"
    opath.write_bytes(
        tar_bytes([("n.tar.gz", tar_bytes([(f"{i}.png", zeros) for i in range(3)], "w:gz")), ("after.png", png())])
    )
    es = {e.uri: e for e in entries(str(opath))}
    assert "expands past" in es[f"{opath}!/n.tar.gz"].error
    assert es[f"{opath}!/after.png"].data == png()


def test_nested_members_rescan_incrementally_and_deletions_inside_are_seen(tmp_path: Path) -> None:
    outer, expected = _nested_outer(tmp_path)
    idx = tmp_path / "idx"
    first = audit.crawl([str(tmp_path / "tree")], idx, workers=0)
    assert first.read == 4 and first.errors == 0
    again = audit.crawl([str(tmp_path / "tree")], idx, workers=0)
    assert (again.read, again.unchanged, again.containers_skipped, again.missing) == (0, 4, 1, 0)
    # rewrite the outer zip without the nested tar: its member is gone, the rest unchanged
    with zipfile.ZipFile(outer) as zf:
        kept = [(i.filename, zf.read(i)) for i in zf.infolist() if i.filename != "inner.tar"]
    outer.write_bytes(zip_bytes(kept, zipfile.ZIP_DEFLATED))
    os.utime(outer, ns=(1_800_000_000_000_000_000, 1_800_000_000_000_000_000))
    third = audit.crawl([str(tmp_path / "tree")], idx, workers=0)
    assert third.missing == 1 and third.containers_skipped == 0
    a = audit.open(idx)
    try:
        gone = [r[0] for r in a.catalog.query("SELECT uri FROM locations WHERE present=0")]
    finally:
        a.close()
    assert gone == [f"{outer}!/inner.tar!/a.png"]


# --- 5. fifos where an archive should be ----------------------------------------------------


def test_archive_replaced_by_a_fifo_is_an_error_row_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "shard.tar"
    path.write_bytes(tar_bytes([("a.png", png())]))
    src = ArchiveSource.local(str(path), str(path))  # listed while it was a file...
    path.unlink()
    os.mkfifo(path)  # ...swapped for a fifo before it is opened
    got = run_with_timeout(lambda: list(src.entries(never)))
    assert len(got) == 1 and got[0].uri == str(path) and "fifo" in got[0].error


def test_fifo_named_like_an_archive_in_a_folder_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(png())
    os.mkfifo(tmp_path / "shard.tar")
    got = run_with_timeout(lambda: {e.uri: e.error for e in entries(str(tmp_path))})
    assert got == {str(tmp_path / "ok.png"): None, str(tmp_path / "shard.tar"): "not a regular file (fifo): not read"}


def test_read_uri_of_an_archive_that_became_a_fifo(tmp_path: Path) -> None:
    path = tmp_path / "shard.zip"
    path.write_bytes(zip_bytes([("a.png", png())]))
    assert read_uri(f"{path}!/a.png") == png()
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ReadError, match="fifo"):
        run_with_timeout(lambda: read_uri(f"{path}!/a.png"), 10)


def _stat(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_size, st.st_mtime_ns
