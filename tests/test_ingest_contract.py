"""The contract every Source runs: same images in, same bytes out, uris of the right shape,
sidecars attached, entries streamed, ``unchanged()`` honoured.

Each ``layout`` below stores one small set of benign images (coloured shapes) in one way:
a folder, a single file, a JSONL/CSV/Parquet manifest, tar, tar.gz, zip, a webdataset shard
and a ``memory://`` prefix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image, ImageDraw

from audit.ingest import (
    ArchiveSource,
    ContainerDone,
    ContainerUnchanged,
    Entry,
    Source,
    open_source,
)


def shape(colour: str, kind: str, fmt: str, background: str = "white") -> bytes:
    img = Image.new("RGB", (48, 48), background)
    draw = ImageDraw.Draw(img)
    if kind == "circle":
        draw.ellipse((8, 8, 40, 40), fill=colour)
    elif kind == "square":
        draw.rectangle((10, 10, 38, 38), fill=colour)
    else:
        draw.polygon([(24, 6), (42, 40), (6, 40)], fill=colour)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


# relative name -> bytes: the set every layout stores
IMAGES = {
    "0001.png": shape("red", "circle", "PNG"),
    "0002.jpg": shape("green", "square", "JPEG"),
    "sub/0003.png": shape("blue", "triangle", "PNG", "black"),
    "sub/0004.gif": shape("yellow", "circle", "GIF", "gray"),
}
SIDECARS = {
    "0001.txt": b"a red circle on a white background",
    "0002.json": json.dumps({"prompt": "a green square", "seed": 7}).encode(),
}
OTHER = {"README.md": b"not an image", "sub/notes.csv": b"a,b\n"}  # never entries


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def never(uri: str, size: int, mtime_ns: int) -> bool:
    return False


def always(uri: str, size: int, mtime_ns: int) -> bool:
    return True


@dataclass
class Layout:
    spec: str
    names: list[str]  # relative names of the images expected
    uri: Callable[[str], str]  # relative name -> expected uri
    sidecars: bool  # whether this reader attaches sidecars
    container: str | None = None  # uri of the archive, for archive sources
    members: str = "!/"  # what separates the container's uri from its members' (Parquet shards: "#row=")


def write_tree(root: Path) -> None:
    for name, data in {**IMAGES, **SIDECARS, **OTHER}.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def archive_members() -> dict[str, bytes]:
    # webdataset order: a key's members adjacent
    return {
        "0001.png": IMAGES["0001.png"],
        "0001.txt": SIDECARS["0001.txt"],
        "0002.jpg": IMAGES["0002.jpg"],
        "0002.json": SIDECARS["0002.json"],
        "README.md": OTHER["README.md"],
        "sub/0003.png": IMAGES["sub/0003.png"],
        "sub/0004.gif": IMAGES["sub/0004.gif"],
    }


def make_layout(kind: str, tmp: Path) -> Layout:
    tree = tmp / "tree"
    if kind == "folder":
        write_tree(tree)
        return Layout(str(tree), list(IMAGES), lambda n: str(tree / n), True)
    if kind == "single-file":
        write_tree(tree)
        return Layout(str(tree / "0001.png"), ["0001.png"], lambda n: str(tree / n), True)
    if kind.startswith("manifest-"):
        write_tree(tree)
        rows = [{"path": f"tree/{n}", "prompt": f"prompt {i}", "seed": i, "model": "toy"} for i, n in enumerate(IMAGES)]
        fmt = kind.split("-", 1)[1]
        m = tmp / f"generations.{fmt}"
        if fmt == "jsonl":
            m.write_text("".join(json.dumps(r) + "\n" for r in rows))
        elif fmt == "csv":
            with m.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), m, row_group_size=2)
        return Layout(str(m), list(IMAGES), lambda n: str(tree / n), False)
    if kind in ("tar", "tar.gz", "zip"):
        a = tmp / f"shard.{kind}"
        if kind == "zip":
            with zipfile.ZipFile(a, "w") as zf:
                for name, data in archive_members().items():
                    zf.writestr(name, data)
        else:
            a.write_bytes(tar_bytes(archive_members(), "w:gz" if kind == "tar.gz" else "w"))
        return Layout(str(a), list(IMAGES), lambda n: f"{a}!/{n}", True, container=str(a))
    if kind == "webdataset":
        # img2dataset layout: key.jpg, key.txt (caption), key.json (url, caption, ...)
        members: dict[str, bytes] = {}
        names = []
        for i, (name, data) in enumerate(IMAGES.items()):
            key = f"00000/{i:09d}"
            ext = name.rsplit(".", 1)[1]
            members[f"{key}.{ext}"] = data
            members[f"{key}.txt"] = f"caption {i}".encode()
            members[f"{key}.json"] = json.dumps(
                {"key": key, "caption": f"caption {i}", "url": f"https://example.invalid/{i}"}
            ).encode()
            names.append(f"{key}.{ext}")
        a = tmp / "00000.tar"
        a.write_bytes(tar_bytes(members))
        layout = Layout(str(a), names, lambda n: f"{a}!/{n}", True, container=str(a))
        layout.bytes_of = {n: IMAGES[orig] for n, orig in zip(names, IMAGES)}  # type: ignore[attr-defined]
        return layout
    if kind == "diffusiondb":  # images/part-000001.zip holding the images and part-000001.json
        root = tmp / "diffusiondb"
        (root / "images").mkdir(parents=True)
        a = root / "images" / "part-000001.zip"
        part = {
            n.rsplit("/", 1)[-1]: {"p": f"prompt {i}", "se": i, "c": 7.0, "st": 20, "sa": "k_lms"}
            for i, n in enumerate(IMAGES)
        }
        with zipfile.ZipFile(a, "w") as zf:
            for name, data in IMAGES.items():
                zf.writestr(name, data)
            zf.writestr("part-000001.json", json.dumps(part))
        return Layout(str(root), list(IMAGES), lambda n: f"{a}!/{n}", False, container=str(a))
    if kind in ("hf-parquet", "parquet-shards"):  # Hugging Face datasets: image struct {bytes, path}
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [
            {"image": {"bytes": data, "path": name}, "prompt": f"prompt {i}"}
            for i, (name, data) in enumerate(IMAGES.items())
        ]
        folder = tmp / "hf" / "data"
        folder.mkdir(parents=True)
        shard = folder / "train-00000-of-00001.parquet"
        pq.write_table(pa.Table.from_pylist(rows), shard, row_group_size=3)
        row_of = {n: i + 1 for i, n in enumerate(IMAGES)}
        spec = str(shard) if kind == "hf-parquet" else str(tmp / "hf")
        return Layout(
            spec, list(IMAGES), lambda n: f"{shard}#row={row_of[n]}", False, container=str(shard), members="#row="
        )
    if kind == "civitai-json":  # a Civitai /api/v1/images export, the images saved by id beside it
        export = tmp / "civitai"
        export.mkdir()
        items, names = [], []
        for i, (name, data) in enumerate(IMAGES.items()):
            ext = name.rsplit(".", 1)[1]
            (export / f"{100 + i}.{ext}").write_bytes(data)
            names.append(f"{100 + i}.{ext}")
            items.append(
                {"id": 100 + i, "url": f"https://image.civitai.com/x/{100 + i}.jpeg", "meta": {"prompt": f"prompt {i}"}}
            )
        (export / "images.json").write_text(json.dumps({"items": items}))
        layout = Layout(str(export / "images.json"), names, lambda n: str(export / n), False)
        layout.bytes_of = dict(zip(names, IMAGES.values()))  # type: ignore[attr-defined]
        return layout
    if kind == "memory":
        import fsspec

        fs = fsspec.filesystem("memory")
        prefix = f"/contract-{uuid.uuid4().hex}"
        for name, data in {**IMAGES, **SIDECARS, **OTHER}.items():
            fs.pipe(f"{prefix}/{name}", data)
        return Layout(f"memory://{prefix}", list(IMAGES), lambda n: f"memory://{prefix}/{n}", True)
    if kind == "file-url":
        write_tree(tree)
        return Layout(f"file://{tree}", list(IMAGES), lambda n: f"file://{tree}/{n}", True)
    raise AssertionError(kind)


KINDS = [
    "folder",
    "single-file",
    "manifest-jsonl",
    "manifest-csv",
    "manifest-parquet",
    "tar",
    "tar.gz",
    "zip",
    "webdataset",
    "diffusiondb",
    "hf-parquet",
    "parquet-shards",
    "civitai-json",
    "memory",
    "file-url",
]


def read(entry: Entry) -> bytes:
    if entry.data is not None:
        return entry.data
    assert entry.path is not None, entry
    with open(entry.path, "rb") as fh:
        return fh.read()


@pytest.fixture(params=KINDS)
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Layout:
    return make_layout(request.param, tmp_path)


def test_is_a_source(layout: Layout) -> None:
    src = open_source(layout.spec)
    assert isinstance(src, Source)
    assert src.spec == layout.spec
    assert isinstance(src.complete, bool)
    assert isinstance(src.root_uri, str) and src.root_uri


def test_same_images_same_bytes_and_uris(layout: Layout) -> None:
    src = open_source(layout.spec)
    listed = list(src.entries(never))
    entries = [e for e in listed if isinstance(e, Entry)]
    assert [e for e in entries if e.error] == []
    bytes_of = getattr(layout, "bytes_of", IMAGES)
    expected = {layout.uri(n): sha(bytes_of[n]) for n in layout.names}
    got = {e.uri: sha(read(e)) for e in entries}
    assert got == expected
    assert len(entries) == len(expected)  # nothing listed twice
    for e in entries:
        assert e.source == layout.spec
        e.uri.encode("utf-8")  # storable
        assert e.size == len(read(e))
        assert e.path is not None or e.data is not None
        if e.path is not None:
            assert e.uri == e.path  # local files: uri is the absolute path
        assert (
            e.uri == src.root_uri
            or e.uri.startswith((src.root_uri.rstrip("/") + "/", src.root_uri + "!/"))
            or not src.complete
        )


def test_sidecars_attached(layout: Layout) -> None:
    if not layout.sidecars:
        pytest.skip("this reader takes metadata from its columns, not sidecars")
    entries = {e.uri: e for e in open_source(layout.spec).entries(never) if isinstance(e, Entry)}
    first = entries[layout.uri(layout.names[0])]
    texts = {}
    for s in first.sidecars:
        texts[s.name] = s.data if s.data is not None else Path(s.path).read_bytes()  # type: ignore[arg-type]
    if "webdataset" in layout.spec or layout.spec.endswith("00000.tar"):
        assert texts["000000000.txt"] == b"caption 0"
        assert first.fields["caption"] == "caption 0"
        assert first.fields["url"] == "https://example.invalid/0"
        return
    assert texts == {"0001.txt": SIDECARS["0001.txt"]}
    if len(layout.names) > 1:
        second = entries[layout.uri("0002.jpg")]
        assert [s.name for s in second.sidecars] == ["0002.json"]
        third = entries[layout.uri("sub/0003.png")]
        assert third.sidecars == ()


def test_manifest_fields(layout: Layout) -> None:
    if "generations." not in layout.spec:
        pytest.skip("manifests only")
    entries = [e for e in open_source(layout.spec).entries(never) if isinstance(e, Entry)]
    by_uri = {e.uri: e for e in entries}
    e = by_uri[layout.uri("0002.jpg")]
    assert e.fields["prompt"] == "prompt 1"
    assert e.fields["seed"] == "1"
    assert e.fields["model"] == "toy"
    assert e.container == open_source(layout.spec).root_uri


def test_dataset_layouts_carry_their_prompts(layout: Layout) -> None:
    if not any(k in layout.spec for k in ("diffusiondb", "hf", "civitai")):
        pytest.skip("public dataset layouts only")
    entries = {e.uri: e for e in open_source(layout.spec).entries(never) if isinstance(e, Entry)}
    assert [entries[layout.uri(n)].fields["prompt"] for n in layout.names] == [
        f"prompt {i}" for i in range(len(layout.names))
    ]


def test_entries_is_a_lazy_iterator(layout: Layout) -> None:
    it = open_source(layout.spec).entries(never)
    assert iter(it) is it  # a generator, not a list built up front
    first = next(it)
    assert isinstance(first, (Entry, ContainerDone, ContainerUnchanged))


def test_containers_done_and_unchanged(layout: Layout) -> None:
    src = open_source(layout.spec)
    listed = list(src.entries(never))
    if layout.container is None:
        assert not any(isinstance(x, (ContainerDone, ContainerUnchanged)) for x in listed)
        return
    done = [x for x in listed if isinstance(x, ContainerDone)]
    assert len(done) == 1 and listed[-1] is done[0]
    assert done[0].uri == layout.container
    assert done[0].size == Path(layout.container).stat().st_size
    assert done[0].mtime_ns == Path(layout.container).stat().st_mtime_ns
    asked = []

    def unchanged(uri: str, size: int, mtime_ns: int) -> bool:
        asked.append((uri, size, mtime_ns))
        return True

    again = list(open_source(layout.spec).entries(unchanged))
    assert again == [ContainerUnchanged(layout.container, layout.spec, members=layout.members)]
    assert asked == [(done[0].uri, done[0].size, done[0].mtime_ns)]


# --- archives inside other sources ---------------------------------------------------------


def test_archive_inside_folder_is_a_container(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree")
    (tmp_path / "tree" / "batch.zip").write_bytes(_zip(archive_members()))
    src = open_source(str(tmp_path / "tree"))
    listed = list(src.entries(never))
    zip_uri = str(tmp_path / "tree" / "batch.zip")
    members = [e for e in listed if isinstance(e, Entry) and e.container == zip_uri]
    assert {e.uri for e in members} == {f"{zip_uri}!/{n}" for n in IMAGES}
    assert ContainerDone(zip_uri, str(tmp_path / "tree"), *_size_mtime(tmp_path / "tree" / "batch.zip")) in listed
    # unchanged: the archive is not opened, its members are not listed
    relisted = list(src.entries(lambda uri, size, mtime: uri == zip_uri))
    assert ContainerUnchanged(zip_uri, str(tmp_path / "tree")) in relisted
    assert not [e for e in relisted if isinstance(e, Entry) and e.container == zip_uri]
    assert len([e for e in relisted if isinstance(e, Entry)]) == len(IMAGES)


def test_archive_inside_memory_prefix(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    prefix = f"/arch-{uuid.uuid4().hex}"
    fs.pipe(f"{prefix}/a/shard.tar", tar_bytes(archive_members()))
    listed = list(open_source(f"memory://{prefix}").entries(never))
    uri = f"memory://{prefix}/a/shard.tar"
    assert {e.uri for e in listed if isinstance(e, Entry)} == {f"{uri}!/{n}" for n in IMAGES}
    assert isinstance(listed[-1], ContainerDone) and listed[-1].uri == uri
    assert list(open_source(f"memory://{prefix}").entries(always)) == [ContainerUnchanged(uri, f"memory://{prefix}")]


def test_archive_and_manifest_at_urls(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    prefix = f"/urls-{uuid.uuid4().hex}"
    fs.pipe(f"{prefix}/shard.zip", _zip(archive_members()))
    for name, data in IMAGES.items():
        fs.pipe(f"{prefix}/imgs/{name}", data)
    fs.pipe(f"{prefix}/m.jsonl", "".join(json.dumps({"uri": f"imgs/{n}", "prompt": n}) + "\n" for n in IMAGES).encode())
    zsrc = open_source(f"memory://{prefix}/shard.zip")
    assert isinstance(zsrc, ArchiveSource)
    got = {e.uri: sha(e.data) for e in zsrc.entries(never) if isinstance(e, Entry)}  # type: ignore[arg-type]
    assert got == {f"memory://{prefix}/shard.zip!/{n}": sha(d) for n, d in IMAGES.items()}
    msrc = open_source(f"memory://{prefix}/m.jsonl")
    assert msrc.complete is False
    got = {e.uri: (sha(e.data), e.fields["prompt"]) for e in msrc.entries(never) if isinstance(e, Entry)}  # type: ignore[arg-type]
    assert got == {f"memory://{prefix}/imgs/{n}": (sha(d), n) for n, d in IMAGES.items()}


def test_single_object_at_url() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    prefix = f"/one-{uuid.uuid4().hex}"
    fs.pipe(f"{prefix}/0001.png", IMAGES["0001.png"])
    fs.pipe(f"{prefix}/0001.txt", SIDECARS["0001.txt"])
    src = open_source(f"memory://{prefix}/0001.png")
    [e] = list(src.entries(never))
    assert isinstance(e, Entry) and e.data == IMAGES["0001.png"] and e.uri == f"memory://{prefix}/0001.png"
    assert [(s.name, s.data) for s in e.sidecars] == [("0001.txt", SIDECARS["0001.txt"])]
    assert e.mtime_ns and e.mtime_ns > 0


# --- streaming ----------------------------------------------------------------------------


def _noise(seed: int, n: int = 24_000) -> bytes:
    # incompressible payload so the archive is much bigger than one member
    return hashlib.shake_256(str(seed).encode()).digest(n)


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_first_entry_arrives_before_the_archive_is_read(tmp_path: Path, kind: str) -> None:
    members = {f"{i:04d}.png": _noise(i) for i in range(60)}
    path = tmp_path / f"big.{kind}"
    path.write_bytes(_zip(members) if kind == "zip" else tar_bytes(members, "w:gz" if kind == "tar.gz" else "w"))
    total = path.stat().st_size
    opened: list[io.BufferedReader] = []

    def opener() -> io.BufferedReader:
        fh = open(path, "rb")
        opened.append(fh)
        return fh

    src = ArchiveSource(str(path), str(path), opener, size=total, mtime_ns=0)
    it = src.entries(never)
    first = next(it)
    assert isinstance(first, Entry) and first.data == members[first.uri.rsplit("!/", 1)[1]]
    assert opened[0].tell() < total / 4, "the whole archive was read before the first entry"
    rest = [e for e in it if isinstance(e, Entry)]
    assert len(rest) == 59


def test_large_directory_listed_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import audit.ingest.folder as folder

    monkeypatch.setattr(folder, "CHUNK", 3)
    for i in range(10):
        (tmp_path / f"{i:02d}.png").write_bytes(IMAGES["0001.png"])
    (tmp_path / "07.txt").write_bytes(b"caption")
    entries = [e for e in open_source(str(tmp_path)).entries(never) if isinstance(e, Entry)]
    assert sorted(Path(e.uri).name for e in entries) == [f"{i:02d}.png" for i in range(10)]
    assert [s.name for e in entries for s in e.sidecars] == ["07.txt"]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _size_mtime(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns
