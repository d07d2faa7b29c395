"""The catalog is never lost or damaged, and the environment gets clear errors and exit codes.

Only crawl/scan create an index, atomically, and only where none exists; an empty, damaged
or foreign catalog is refused in one line and left byte for byte as it was; a read-only
index can be read by every reader and is refused by every writer with exit 3; a full disk
is exit 3 naming the file, the catalog stays consistent and a rerun with space finishes.

We run as root, so file modes do not make anything read-only for us: read-only storage is
a read-only bind mount and a full disk a tiny tmpfs, each in a private mount namespace
(``unshare -m``), or ``RLIMIT_FSIZE`` in the child (writes then fail with EFBIG).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import resource
import shlex
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import audit
from audit.catalog.access import CATALOG_FILE
from audit.errors import CatalogDamaged, ExitCode, IndexMissing, IndexReadOnly

from tests.cli_helper import audit_cli
from tests.toy_world import make_archive_dir

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    """A crawled index of 6 toy generations with stored vectors and a FAISS index (so
    `search --item` and `flag` run without a model), and its archive."""
    from audit.catalog.vectors import ModelIdentity, VectorStore

    root = tmp_path_factory.mktemp("crawled")
    make_archive_dir(root / "archive", n=6)
    audit.crawl([str(root / "archive")], root / "idx", workers=0)
    with audit.open(root / "idx") as a:
        ids = a.items()["item_id"].to_list()
        vs = VectorStore(a.catalog.conn)
        model = ModelIdentity("fake-clip", pretrained="synthetic")
        vs.register_model(model, 8)
        vecs = np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32)
        vs.put(model.key, "image", ids, vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
        a.index()
    return root


@pytest.fixture
def idx(crawled, tmp_path):
    """A private copy of the crawled index (and its archive)."""
    shutil.copytree(crawled / "archive", tmp_path / "archive")
    shutil.copytree(crawled / "idx", tmp_path / "idx")
    # a connection the fixture's process still holds may have left -wal/-shm in the copy:
    # fold them in, so every test starts from a cleanly closed catalog (the last close removes them)
    sqlite3.connect(tmp_path / "idx" / CATALOG_FILE, isolation_level=None).close()
    assert not (tmp_path / "idx" / f"{CATALOG_FILE}-wal").exists()
    return tmp_path / "idx"


def _item(index: Path) -> str:
    # immutable: reads the closed catalog without making -wal/-shm files beside it
    with sqlite3.connect(f"file:{index / CATALOG_FILE}?mode=ro&immutable=1", uri=True) as c:
        return c.execute("SELECT item_id FROM items ORDER BY item_id LIMIT 1").fetchone()[0]


def _snapshot(folder: Path) -> dict[str, str]:
    """name -> SHA-256 of every file in ``folder`` (sidecar files included)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_line(stderr: str, *needles: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def _unshare_works() -> str | None:
    """None when a private mount namespace with mounts can be made here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && umount /mnt"],
        capture_output=True,
        text=True,
    )
    return None if r.returncode == 0 else f"cannot mount in a private namespace: {r.stderr.strip()[:120]}"


_NO_MOUNTS = _unshare_works()
needs_mounts = pytest.mark.skipif(_NO_MOUNTS is not None, reason=str(_NO_MOUNTS))


def in_namespace(setup: str, *commands: str, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Run ``setup`` (mounts) then each command in one private mount namespace; each
    command's (exit code, stdout, stderr) come back through files."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"ns-{os.getpid()}-{os.urandom(4).hex()}"
    out.mkdir()
    try:
        script = [setup + " || exit 99"]
        for i, cmd in enumerate(commands):
            script.append(f"({cmd}) >{out}/{i}.out 2>{out}/{i}.err; echo $? >{out}/{i}.rc")
        r = subprocess.run(
            ["unshare", "-m", "sh", "-c", "\n".join(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert r.returncode != 99, f"namespace setup failed: {r.stderr}"
        results = []
        for i, cmd in enumerate(commands):
            rc = int((out / f"{i}.rc").read_text())
            results.append(
                subprocess.CompletedProcess(cmd, rc, (out / f"{i}.out").read_text(), (out / f"{i}.err").read_text())
            )
        return results
    finally:
        shutil.rmtree(out, ignore_errors=True)


def audit_cmd(*args: str) -> str:
    return shlex.join([sys.executable, "-m", "audit", *map(str, args)])


def py_cmd(code: str) -> str:
    return shlex.join([sys.executable, "-c", textwrap.dedent(code)])


def ro_mount(src: Path, dst: Path) -> str:
    dst.mkdir(exist_ok=True)
    return f"mount --bind -o ro {shlex.quote(str(src))} {shlex.quote(str(dst))}"


# ----------------------------------------------------------------------------- opening never creates


def test_open_never_creates_an_index(tmp_path):
    with pytest.raises(IndexMissing):
        audit.open(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexMissing):
        audit.open(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []
    for cmd in (
        ["search", "--text", "x"],
        ["report", "--out", str(tmp_path / "r")],
        ["flag"],
        ["index"],
        ["review", "--item", "abc", "--decision", "confirm"],
    ):
        r = audit_cli(cmd[0], "--index", tmp_path / "empty", *cmd[1:], expected=ExitCode.USAGE)
        _one_line(r.stderr, "no audit index", str(tmp_path / "empty"))
    assert list((tmp_path / "empty").iterdir()) == [] and not (tmp_path / "r").exists()


def _other_sqlite(p: Path) -> None:
    with sqlite3.connect(p) as c:
        c.execute("CREATE TABLE notes (t TEXT)")
        c.execute("INSERT INTO notes VALUES ('not ours')")


def _half_made(p: Path) -> None:
    """What the old creation left when killed between its statements: tables, no schema version."""
    from audit.catalog.migrations import CATALOG_TABLES

    with sqlite3.connect(p) as c:
        c.executescript(CATALOG_TABLES)


def _corrupt_page(p: Path) -> None:
    with open(p, "r+b") as fh:
        fh.seek(4096 * 5)
        fh.write(b"\xff" * 4096)


DAMAGE = {
    "empty": (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    "garbage": (lambda p: p.write_bytes(os.urandom(8192)), "not an SQLite database"),
    "truncated": (lambda p: os.truncate(p, 4096), "corrupt"),
    "corrupt_page": (_corrupt_page, "corrupt"),
    "other_sqlite": (lambda p: (p.unlink(), _other_sqlite(p)), "not an audit catalog"),
    "half_made": (lambda p: (p.unlink(), _half_made(p)), "no schema version"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_catalog_is_refused_and_left_untouched(idx, kind):
    damage, words = DAMAGE[kind]
    damage(idx / CATALOG_FILE)
    before = _snapshot(idx)
    for kwargs in ({}, {"read_only": True}, {"create": True}):
        with pytest.raises(CatalogDamaged) as info:
            audit.open(idx, **kwargs)
        msg = str(info.value)
        assert "\n" not in msg and str(idx / CATALOG_FILE) in msg and words in msg
        assert "restore it from a backup" in msg and "audit crawl" in msg
    for cmd in (["search", "--item", "abc"], ["crawl", str(idx.parent / "archive"), "--workers", "0"]):
        r = audit_cli(cmd[0], *cmd[1:], "--index", idx, expected=ExitCode.USAGE)
        _one_line(r.stderr, str(idx / CATALOG_FILE), words)
    assert _snapshot(idx) == before, "the damaged catalog (and its folder) must be left exactly as it was"


@pytest.mark.slow
def test_every_command_refuses_an_empty_catalog(idx, tmp_path):
    (idx / CATALOG_FILE).write_bytes(b"")
    before = _snapshot(idx)
    for cmd in (
        ["search", "--text", "x"],
        ["report", "--out", str(tmp_path / "r")],
        ["flag"],
        ["index"],
        ["embed", "--model", "toy-shapes"],
        ["review", "--item", "abc", "--decision", "confirm"],
        ["scan", str(idx.parent / "archive"), "--model", "toy-shapes"],
    ):
        r = audit_cli(cmd[0], "--index", idx, *cmd[1:], expected=ExitCode.USAGE)
        _one_line(r.stderr, "empty (0 bytes)", str(idx / CATALOG_FILE))
    assert _snapshot(idx) == before and (idx / CATALOG_FILE).stat().st_size == 0


def test_stale_write_ahead_log_without_catalog_is_refused(idx):
    """A -wal left where the catalog was deleted would be replayed onto a new empty file."""
    (idx / CATALOG_FILE).unlink()
    (idx / f"{CATALOG_FILE}-wal").write_bytes(b"\x37\x7f\x06\x82" + os.urandom(4092))
    r = audit_cli("crawl", idx.parent / "archive", "--index", idx, "--workers", "0", expected=ExitCode.USAGE)
    _one_line(r.stderr, f"{CATALOG_FILE}-wal", "no catalog.sqlite")
    assert not (idx / CATALOG_FILE).exists()


def _kill_child(index: Path, at: str) -> subprocess.CompletedProcess:
    """Create ``index`` in a child that SIGKILLs itself on its first call of ``at`` (a C
    function: executescript, rename, fsync) during creation."""
    code = f"""
        import os, signal, sys
        def prof(frame, event, arg):
            if event == "c_call" and getattr(arg, "__name__", "") == {at!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        import audit, audit.api, audit.catalog.store, audit.findings.store, audit.catalog.vectors
        sys.setprofile(prof)
        audit.open({str(index)!r}, create=True)
    """
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("at", ["executescript", "fsync", "rename"])
def test_sigkill_during_creation_leaves_no_catalog_or_a_whole_one(tmp_path, at):
    index = tmp_path / "idx"
    r = _kill_child(index, at)
    assert r.returncode == -signal.SIGKILL, r.stderr
    path = index / CATALOG_FILE
    if path.exists():  # judged with plain SQLite, before audit opens it again
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
            tables = {t for (t,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            assert {
                "meta",
                "items",
                "locations",
                "runs",
                "findings",
                "decisions",
                "vector_rows",
                "vector_shards",
            } <= tables
            assert c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() is not None
    archive = tmp_path / "archive"
    make_archive_dir(archive, n=3)
    audit_cli("crawl", archive, "--index", index, "--workers", "0", "-q")
    assert audit.open(index).items().height == 3
    assert not [p.name for p in index.iterdir() if p.name.startswith(".catalog")], "temporary catalogs removed"


def test_write_ahead_log_with_committed_data_is_read(idx):
    """A writer killed with its commits still in catalog.sqlite-wal: that data is the catalog."""
    code = f"""
        import os, sqlite3
        c = sqlite3.connect({str(idx / CATALOG_FILE)!r}, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA wal_autocheckpoint=0")
        c.execute("INSERT INTO runs (command, started, status) SELECT 'from-the-log', started, 'ok' FROM runs LIMIT 1")
        os._exit(0)
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True)
    assert (idx / f"{CATALOG_FILE}-wal").stat().st_size > 0
    for read_only in (False, True):
        with audit.open(idx, read_only=read_only) as a:
            assert "from-the-log" in a.runs()["command"].to_list()


# ----------------------------------------------------------------------------- read-only index


def test_read_only_open_writes_nothing(idx):
    """(SQLite's mode=ro may add an empty -wal and a -shm beside the catalog, to see the
    commits of a concurrent writer; the catalog and the lock file stay as they were.)"""
    before = {k: v for k, v in _snapshot(idx).items() if k in (CATALOG_FILE, "lock")}
    with audit.open(idx, read_only=True) as a:
        assert a.read_only and a.read_only_reason == "opened read-only"
        assert a.items().height == 6 and a.findings().height == 0 and a.decisions().height == 0
        with pytest.raises(IndexReadOnly):
            a.review(_item(idx), decision="confirm")
        with pytest.raises(IndexReadOnly):
            a.crawl(str(idx.parent / "archive"), workers=0)
        with pytest.raises(IndexReadOnly):
            a.index()
    after = _snapshot(idx)
    assert {k: v for k, v in after.items() if k in (CATALOG_FILE, "lock")} == before
    assert not (idx / f"{CATALOG_FILE}-wal").exists() or (idx / f"{CATALOG_FILE}-wal").stat().st_size == 0


@needs_mounts
@pytest.mark.slow
def test_read_only_mount_readers_work_writers_exit_3(idx, tmp_path):
    ro = tmp_path / "ro"
    item = _item(idx)
    before = _snapshot(idx)
    out = tmp_path / "report"
    readers = [
        audit_cmd("search", "--index", ro, "--item", item, "-k", "3", "--json"),
        audit_cmd("report", "--index", ro, "--out", out, "-q"),
        py_cmd(f"""
            import audit
            a = audit.open({str(ro)!r})
            print(a.read_only, a.read_only_reason, a.items().height, a.findings().height, a.decisions().height)
        """),
    ]
    writers = [
        ("crawl", audit_cmd("crawl", tmp_path / "archive", "--index", ro, "--workers", "0", "-q")),
        ("review", audit_cmd("review", "--index", ro, "--item", item, "--decision", "confirm")),
        ("index", audit_cmd("index", "--index", ro, "--rebuild", "-q")),
        ("flag", audit_cmd("flag", "--index", ro, "-q")),
        ("embed", audit_cmd("embed", "--index", ro, "--model", "toy-shapes", "-q")),
    ]
    results = in_namespace(ro_mount(idx, ro), *readers, *(c for _, c in writers))
    search, report, notebook = results[:3]
    assert search.returncode == ExitCode.OK, search.stderr
    assert json.loads(search.stdout)["results"][0]["item_id"] == item
    assert report.returncode == ExitCode.OK, report.stderr
    notes = json.loads((out / "manifest.json").read_text())["notes"]
    assert any("read-only" in n and "not recorded" in n for n in notes)
    assert notebook.returncode == 0 and notebook.stdout.split() == [
        "True",
        "read-only",
        "file",
        "system",
        "6",
        "0",
        "0",
    ]
    for (name, _), r in zip(writers, results[3:]):
        assert r.returncode == ExitCode.ENVIRONMENT, (name, r.returncode, r.stderr)
        _one_line(r.stderr, f"index {ro} is read-only")
    assert _snapshot(idx) == before


@needs_mounts
def test_read_only_mount_of_an_older_catalog_shadows_missing_tables(idx, tmp_path):
    """An index made before the findings, vectors or newer columns existed: readers see
    them empty or NULL, and nothing is written."""
    with sqlite3.connect(idx / CATALOG_FILE) as c:
        for t in ("findings", "clusters", "decisions", "flag_runs"):
            c.execute(f"DROP TABLE {t}")
        c.execute("ALTER TABLE locations DROP COLUMN root")
        c.execute("PRAGMA user_version = 0")  # such an index is unversioned
    ro = tmp_path / "ro"
    (r,) = in_namespace(
        ro_mount(idx, ro),
        py_cmd(f"""
        import audit
        a = audit.open({str(ro)!r})
        items = a.items()
        print(a.read_only, items.height, a.findings().height, a.decisions().height, a.clusters().height)
    """),
        audit_cmd("report", "--index", ro, "--out", tmp_path / "rep", "-q"),
    )[:1]
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "6", "0", "0", "0"]
    assert (tmp_path / "rep" / "manifest.json").exists()


@needs_mounts
def test_read_only_mount_with_write_ahead_log(idx, tmp_path):
    """A copy taken while a writer was running: its -wal holds commits. Readable while its
    -shm is there; without one SQLite cannot read the log read-only: exit 3, one line
    (never the stale main file alone)."""
    code = f"""
        import os, sqlite3
        c = sqlite3.connect({str(idx / CATALOG_FILE)!r}, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA wal_autocheckpoint=0")
        c.execute("INSERT INTO runs (command, started, status) SELECT 'from-the-log', started, 'ok' FROM runs LIMIT 1")
        os._exit(0)
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True)
    ro = tmp_path / "ro"
    reader = py_cmd(f"import audit; print(audit.open({str(ro)!r}).runs()['command'].to_list())")
    (with_shm,) = in_namespace(ro_mount(idx, ro), reader)
    assert with_shm.returncode == 0 and "from-the-log" in with_shm.stdout, with_shm.stderr
    (idx / f"{CATALOG_FILE}-shm").unlink()
    no_shm, search = in_namespace(ro_mount(idx, ro), reader, audit_cmd("search", "--index", ro, "--item", "abc"))
    assert no_shm.returncode != 0 and "IndexReadOnly" in no_shm.stderr
    assert search.returncode == ExitCode.ENVIRONMENT
    _one_line(search.stderr, str(ro / CATALOG_FILE), "write-ahead log")


@needs_mounts
def test_read_only_mount_while_a_writer_holds_the_lock(idx, tmp_path):
    """Without a -shm on a read-only mount the catalog is read with immutable=1 only when
    no audit run is writing it (its lock is free)."""
    ro = tmp_path / "ro"
    assert not (idx / f"{CATALOG_FILE}-shm").exists()
    holder = py_cmd(f"""
        import fcntl, os, sys, time
        fd = os.open({str(idx / "lock")!r}, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        open({str(tmp_path / "held")!r}, 'w').close()
        time.sleep(30)
    """)
    wait = f"while [ ! -e {shlex.quote(str(tmp_path / 'held'))} ]; do sleep 0.05; done"
    free, held = in_namespace(
        ro_mount(idx, ro),
        audit_cmd("search", "--index", ro, "--item", _item(idx), "-k", "1", "--json"),
        f"{holder} & {wait}; {audit_cmd('search', '--index', ro, '--item', 'abc')}; rc=$?; kill $!; exit $rc",
    )
    assert free.returncode == ExitCode.OK, free.stderr
    assert held.returncode == ExitCode.ENVIRONMENT
    _one_line(held.stderr, "being written by another audit run")


# ----------------------------------------------------------------------------- disk full


def _fsize_limit(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _big_archive(root: Path, n: int = 30) -> Path:
    """Generations with 30 kB prompts: the catalog outgrows a small limit quickly."""
    from PIL import Image, PngImagePlugin

    root.mkdir(parents=True)
    for i in range(n):
        info = PngImagePlugin.PngInfo()
        info.add_text(
            "parameters", f"a red square number {i} " + "and a blue circle " * 1700 + f"\nSteps: 20, Seed: {i}"
        )
        Image.new("RGB", (16, 16), (i * 7 % 255, 40, 40)).save(root / f"{i:03d}.png", pnginfo=info)
    return root


def _consistent(index: Path) -> int:
    with sqlite3.connect(f"file:{index / CATALOG_FILE}?mode=ro", uri=True) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return c.execute("SELECT count(*) FROM items").fetchone()[0]


def test_file_size_limit_is_disk_full_and_a_rerun_finishes(tmp_path):
    archive = _big_archive(tmp_path / "archive")
    index = tmp_path / "idx"
    cmd = [sys.executable, "-m", "audit", "crawl", str(archive), "--index", str(index), "--workers", "0", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_fsize_limit(400_000), timeout=120)
    assert r.returncode == ExitCode.ENVIRONMENT, r.stderr
    _one_line(r.stderr, f"disk full writing {index / CATALOG_FILE}", "file size limit")
    assert _consistent(index) < 30
    audit_cli(*cmd[3:])  # the rerun, without the limit
    assert _consistent(index) == 30


@needs_mounts
def test_full_file_system_is_exit_3_and_a_rerun_with_space_finishes(tmp_path):
    archive = _big_archive(tmp_path / "archive")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    index = mnt / "idx"
    crawl = audit_cmd("crawl", archive, "--index", index, "--workers", "0", "-q")
    check = py_cmd(f"""
        import sqlite3
        c = sqlite3.connect("file:{index / CATALOG_FILE}?mode=ro", uri=True)
        print(c.execute("PRAGMA integrity_check").fetchone()[0], c.execute("SELECT count(*) FROM items").fetchone()[0])
    """)
    full, after_full, grow, rerun, after_rerun = in_namespace(
        f"mount -t tmpfs -o size=400k tmpfs {shlex.quote(str(mnt))}",
        crawl,
        check,
        f"mount -o remount,size=8m {shlex.quote(str(mnt))}",
        crawl,
        check,
    )
    assert full.returncode == ExitCode.ENVIRONMENT, full.stderr
    _one_line(full.stderr, f"disk full writing {index / CATALOG_FILE}")
    ok, n = after_full.stdout.split()
    assert ok == "ok" and int(n) < 30
    assert grow.returncode == 0 and rerun.returncode == ExitCode.OK, rerun.stderr
    assert after_rerun.stdout.split() == ["ok", "30"]


@needs_mounts
def test_report_on_a_full_disk_is_exit_3_naming_the_file(idx, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    filler = shlex.quote(str(mnt / "filler"))
    r, left = in_namespace(
        f"mount -t tmpfs -o size=256k tmpfs {shlex.quote(str(mnt))} && (head -c 250000 /dev/zero > {filler} || true)",
        audit_cmd("report", "--index", idx, "--out", mnt / "rep", "-q"),
        f"ls -A {shlex.quote(str(mnt))}",
    )
    assert r.returncode == ExitCode.ENVIRONMENT, r.stderr
    _one_line(r.stderr, "disk full writing", str(mnt))
    assert left.stdout.split() == ["filler"], "no staging folder or half report left behind"
