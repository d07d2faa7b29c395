"""Sources the people being audited control: JSON nested to blow the stack, manifest rows of
hundreds of megabytes, fifos where files should be, objects that lie about their size.
Each costs one recorded row (or one recorded metadata problem), never the crawl."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
import tracemalloc
import uuid
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import audit
from audit.errors import InputError
from audit.ingest import Entry, open_source
from audit.ingest._common import FetchWindow
from audit.ingest.manifest import MAX_CSV_RECORD_BYTES, MAX_ROW_BYTES
from audit.ingest.reader import ReadError, read_uri
from audit.safeio import TooLarge
from tests.cli_helper import audit_cli

DEEP = b"[" * 100_000 + b"]" * 100_000  # RecursionError for json.loads


def png(colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


def never(uri: str, size: int, mtime_ns: int) -> bool:
    return False


def entries(spec: str) -> list[Entry]:
    return [e for e in open_source(spec).entries(never) if isinstance(e, Entry)]


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


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- 4. JSON nested deep enough to overflow the stack -----------------------------------------


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_deep_json_sidecar_costs_its_fields_not_the_image(tmp_path: Path, kind: str) -> None:
    members = [
        ("00000/0001.png", png()),
        ("00000/0001.json", DEEP),
        ("00000/0002.png", png("blue")),
        ("00000/0002.json", json.dumps({"caption": "a blue square"}).encode()),
    ]
    path = tmp_path / f"shard.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members:
                zf.writestr(name, data)
    else:
        path.write_bytes(_tar(members))
    es = {e.uri.rsplit("!/", 1)[1]: e for e in entries(str(path))}
    deep = es["00000/0001.png"]
    assert deep.error is None and deep.data == png()
    assert len(deep.fields["sidecar_errors"]) == 1 and "nested" in deep.fields["sidecar_errors"][0]
    assert es["00000/0002.png"].fields == {"caption": "a blue square"}
    summary = audit.crawl([str(path)], tmp_path / "idx", workers=0)  # the whole crawl goes on
    assert summary.read == 2 and summary.errors == 0


def test_deep_jsonl_row_is_an_error_row_and_the_crawl_goes_on(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "b.png").write_bytes(png("blue"))
    m = tmp_path / "m.jsonl"
    m.write_bytes(b'{"path": "a.png"}\n' + b'{"path": "b.png", "x": ' + DEEP + b"}\n" + b'{"path": "b.png"}\n')
    got = entries(str(m))
    assert [e.uri for e in got] == [str(tmp_path / "a.png"), f"{m}#row=2", str(tmp_path / "b.png")]
    assert got[1].error.startswith("bad row: invalid JSON") and "nested" in got[1].error
    summary = audit.crawl([str(m)], tmp_path / "idx", workers=0)
    assert summary.read == 2 and summary.errors == 1


def test_deep_first_jsonl_row_does_not_stop_column_detection(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    m = tmp_path / "m.jsonl"
    m.write_bytes(DEEP + b"\n" + b'{"path": "a.png"}\n')
    assert [e.error is None for e in entries(str(m))] == [False, True]


# --- 4. rows of hundreds of megabytes ---------------------------------------------------------


def _peak_while(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_jsonl_line_is_an_error_row_and_never_held_whole(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    m = tmp_path / "m.jsonl"
    huge = 4 * MAX_ROW_BYTES  # 64 MiB on one line
    with open(m, "wb") as fh:
        fh.write(b'{"path": "a.png", "prompt": "')
        block = b"x" * (1 << 20)
        for _ in range(huge >> 20):
            fh.write(block)
        fh.write(b'"}\n{"path": "a.png"}\n')
    got, peak = _peak_while(lambda: entries(str(m)))
    assert [e.uri for e in got] == [f"{m}#row=1", str(tmp_path / "a.png")]
    assert got[0].error == f"bad row: line longer than {MAX_ROW_BYTES} bytes (not read)"
    assert peak < MAX_ROW_BYTES + (4 << 20), f"the reader held {peak} bytes of a {huge}-byte line"


def test_huge_csv_record_is_an_error_row_and_never_held_whole(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    m = tmp_path / "m.csv"
    with open(m, "wb") as fh:
        fh.write(b"path,prompt\n")
        fh.write(b'a.png,"')
        for _ in range(3 * (MAX_ROW_BYTES >> 20)):  # one quoted field over many short lines
            fh.write((b"y" * 1000 + b"\n") * 1048)
        fh.write(b'"\n')
        fh.write(b"a.png,a red square\n")
    got, peak = _peak_while(lambda: entries(str(m)))
    good = [e for e in got if e.error is None]
    assert [e.fields for e in good] == [{"prompt": "a red square"}]
    bad = [e for e in got if e.error]
    assert [e.error for e in bad] == [f"bad row: record longer than {MAX_CSV_RECORD_BYTES} bytes (not read)"]
    assert peak < 10 * MAX_CSV_RECORD_BYTES, f"the reader held {peak} bytes of a 48 MiB record"


def test_huge_and_deep_parquet_cells(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.png").write_bytes(png())
    big = "z" * (MAX_ROW_BYTES + 1)
    pq.write_table(pa.table({"path": ["a.png", "a.png"], "prompt": [big, "a red square"]}), tmp_path / "m.parquet")
    got = entries(str(tmp_path / "m.parquet"))
    assert [e.error for e in got] == [None, None]  # the image is audited without the cell
    assert "prompt" not in got[0].fields and got[0].fields["fields_skipped"][0].startswith("prompt:")
    assert got[1].fields == {"prompt": "a red square"}
    # nesting deeper than Parquet readers allow: the manifest is refused in one line
    t = pa.int64()
    v: object = 1
    for _ in range(150):
        t, v = pa.list_(t), [v]
    pq.write_table(pa.table({"path": ["a.png"], "deep": pa.array([v], type=t)}), tmp_path / "deep.parquet")
    with pytest.raises(InputError) as info:
        open_source(str(tmp_path / "deep.parquet"))
    assert "\n" not in str(info.value)


def test_parquet_embedded_image_over_the_cap(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    m = tmp_path / "hf.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [{"image": {"bytes": os.urandom(5000), "path": "x.png"}}, {"image": {"bytes": png(), "path": "y.png"}}]
        ),
        m,
    )
    got = list(open_source(str(m), max_member_bytes=4000).entries(never))
    assert "too large" in got[0].error and got[0].data is None
    assert got[1].data == png()


# --- 5. fifos where files should be ----------------------------------------------------------


def test_manifest_row_naming_a_fifo_is_an_error_row_never_opened(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    os.mkfifo(tmp_path / "pipe.png")
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"path": "pipe.png"}) + "\n" + json.dumps({"path": "a.png"}) + "\n")
    got = run_with_timeout(lambda: entries(str(m)))
    assert [(e.uri, e.error) for e in got] == [
        (str(tmp_path / "pipe.png"), "not a regular file (fifo): not read"),
        (str(tmp_path / "a.png"), None),
    ]
    summary = run_with_timeout(lambda: audit.crawl([str(m)], tmp_path / "idx", workers=0), 60)
    assert summary.read == 1 and summary.errors == 1


def test_manifest_replaced_by_a_fifo_after_it_was_opened(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    m = tmp_path / "m.csv"
    m.write_text("path\na.png\n")
    src = open_source(str(m))
    m.unlink()
    os.mkfifo(m)
    got = run_with_timeout(lambda: list(src.entries(never)))
    assert len(got) == 1 and got[0].uri == str(m) and "fifo" in got[0].error


def test_read_uri_of_a_fifo_is_a_read_error_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    for uri in (str(tmp_path / "pipe.png"), f"file://{tmp_path}/pipe.png"):
        started = time.monotonic()
        with pytest.raises(ReadError, match="fifo"):
            run_with_timeout(lambda: read_uri(uri), 10)
        assert time.monotonic() - started < 5


def test_file_url_prefix_with_fifos_never_blocks(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    os.mkfifo(tmp_path / "a.txt")  # a sidecar that is a fifo
    os.mkfifo(tmp_path / "b.png")
    got = run_with_timeout(lambda: {e.uri.rsplit("/", 1)[1]: e for e in entries(f"file://{tmp_path}")})
    assert got["a.png"].data == png() and got["a.png"].sidecars == ()
    assert "not a regular file" in got["a.png"].fields["sidecars_skipped"][0]
    assert got["b.png"].error.startswith("not a regular file") and got["b.png"].data is None


@pytest.mark.timeout(120)  # the old reader blocked forever on the fifo
def test_report_finishes_when_an_original_was_replaced_by_a_fifo(tmp_path: Path) -> None:
    from audit.report.testing import build_fixture

    fx = build_fixture(tmp_path / "fx")
    original = fx.archive / "blue_triangle.png"  # a flagged, viewable item
    original.unlink()
    os.mkfifo(original)
    audit_cli("report", "--index", fx.index, "--out", tmp_path / "r")
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text("utf-8"))
    [item] = [i for i in manifest["items"] if i["item_id"] == fx.items["blue_triangle"]]
    assert item["present_at_report"] is False and "fifo" in item["read_error"]


# --- 3. remote objects: sizes are never trusted, fetched bytes are bounded ----------------------


def test_remote_object_larger_than_it_says_is_capped(tmp_path: Path) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    class Lying(MemoryFileSystem):
        def info(self, path, **kw):  # type: ignore[no-untyped-def]
            out = dict(super().info(path, **kw))
            out["size"] = 10
            return out

    fs = Lying()
    prefix = f"/lie-{uuid.uuid4().hex}"
    fs.pipe(f"{prefix}/big.png", b"x" * 50_000)
    from audit.ingest import FsspecSource

    src = FsspecSource(f"memory://{prefix}", fs=fs, path=prefix, max_member_bytes=20_000)
    [e] = [x for x in src.entries(never) if isinstance(x, Entry)]
    assert e.data is None and "too large" in e.error


def test_fetch_window_holds_at_most_its_byte_budget_plus_one_object() -> None:
    size, budget = 3 << 20, 8 << 20
    seen: list[int] = []

    def fetch(i: int, ticket) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
        data = ticket.read(io.BytesIO(bytes([i % 256]) * size), 1 << 30)
        seen.append(ticket.window._held)
        time.sleep(0.002)
        return i, data

    def run() -> list[int]:
        out = []
        with FetchWindow(workers=4, window=16, budget_bytes=budget) as window:
            for i in range(40):
                for j, data in window.submit(fetch, i):
                    out.append(j)
                    assert data[:1] == bytes([j % 256])
            out.extend(j for j, _ in window.drain())
        return out

    assert run_with_timeout(run, 30) == list(range(40))  # in order, no deadlock
    assert max(seen) <= budget + size


def test_fetch_window_closes_while_fetches_wait_for_room() -> None:
    def fetch(i: int, ticket) -> int:  # type: ignore[no-untyped-def]
        try:
            ticket.read(io.BytesIO(b"x" * (2 << 20)), 1 << 30)
        except Exception:  # noqa: BLE001 - cancelled: an error result, as a fetch function gives
            return -1
        return i

    def run() -> None:
        with FetchWindow(workers=4, window=16, budget_bytes=1 << 20) as window:
            for i in range(3):
                list(window.submit(fetch, i))
            time.sleep(0.2)  # fetches 1 and 2 now wait for room that never comes

    run_with_timeout(run, 10)


def test_capped_read_helper_refuses_more_than_the_limit() -> None:
    from audit.ingest._common import FetchTicket

    window = FetchWindow(workers=1, budget_bytes=1 << 30)
    try:
        with pytest.raises(TooLarge):
            FetchTicket(window, 0).read(io.BytesIO(b"x" * 5000), 4000)
    finally:
        window.close()
