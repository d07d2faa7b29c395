"""Sources must be readable from every node, and seen the same there as on the driver.

Before any work, one tiny task per alive node (pinned to it, ``num_cpus=0`` so it runs
even on a busy node) fingerprints each local path the run will read: a file by size and
mtime, a directory by the sorted names it holds. A node where a path is missing or looks
different (another disk mounted there, a stale copy) stops the run with one line, before
a half-done crawl. URLs (``s3://``, ``gs://``, ...) are read by every node alike and are
not checked; ``file://`` URLs are local paths.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat as _stat
from typing import Iterable, Sequence

from audit.errors import InputError

LISTED_NAMES = 4096  # names of a directory compared across nodes (sorted, first ones)
SHARED_HINT = (
    "put the sources on a filesystem every node mounts at the same path, or use fsspec URLs (s3://, gs://, ...)"
)


def local_path(uri: str) -> str | None:
    """The local file or directory that ``uri`` is read from; None for a remote URL."""
    from audit.ingest._common import is_url
    from audit.ingest.reader import split_member

    archive, _ = split_member(uri)
    target = archive if archive is not None else uri
    if target.startswith("file://"):
        return target[len("file://") :]
    if is_url(target):
        return None
    return target.split("#row=", 1)[0]  # a manifest row's uri names the manifest


def fingerprint(path: str) -> tuple:
    """What a node sees at ``path``: ("missing", reason) | ("file", size, mtime_ns) | ("dir", digest)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return ("missing", exc.strerror or type(exc).__name__)

    if _stat.S_ISDIR(st.st_mode):
        try:
            names = sorted(os.listdir(path))[:LISTED_NAMES]
        except OSError as exc:
            return ("missing", f"cannot list: {exc.strerror or type(exc).__name__}")
        return ("dir", hashlib.sha256("\0".join(names).encode("utf-8", "surrogateescape")).hexdigest()[:16], len(names))
    return ("file", st.st_size, st.st_mtime_ns)


def _node_view(paths: Sequence[str]) -> dict:
    try:
        import audit

        version = getattr(audit, "__version__", "?")
    except ImportError:  # audit must be installed on every node
        version = None
    return {"host": socket.gethostname(), "audit": version, "seen": [fingerprint(p) for p in paths]}


def _describe(fp: tuple) -> str:
    if fp[0] == "missing":
        return f"missing there ({fp[1]})"
    if fp[0] == "dir":
        return f"a directory listing {fp[2]} names, different ones from the driver's"
    return f"a file of {fp[1]} bytes, mtime {fp[2]} (on the driver: different)"


def check_visible(ray, uris: Iterable[str], *, what: str = "source") -> int:
    """Raise ``InputError`` (one line) unless every alive node sees each local path of
    ``uris`` as the driver does; returns how many nodes were checked."""
    return check_paths(ray, [p for p in (local_path(u) for u in uris) if p], what=what)


def check_paths(ray, paths: Iterable[str], *, what: str = "source") -> int:
    """``check_visible`` for local paths."""
    paths = sorted(set(paths))
    if not paths:
        return 0
    mine = [fingerprint(p) for p in paths]
    for p, fp in zip(paths, mine):
        if fp[0] == "missing":
            raise InputError(f"{what} {p} is not readable on the driver: {fp[1]}")
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    view = ray.remote(num_cpus=0, max_retries=2)(_node_view)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [
        view.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(paths)
        for n in nodes
    ]
    for node, seen in zip(nodes, ray.get(refs)):
        where = f"Ray node {node.get('NodeManagerAddress', '?')} ({seen['host']})"
        if seen["audit"] is None:
            raise InputError(f"audit is not installed on {where}: install the same audit on every node")
        for p, fp, theirs in zip(paths, mine, seen["seen"]):
            if tuple(theirs) != tuple(fp):
                raise InputError(f"{what} {p} is not the same on {where}: {_describe(tuple(theirs))}; {SHARED_HINT}")
    return len(nodes)
