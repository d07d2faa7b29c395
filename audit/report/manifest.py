"""manifest.json: the chain of custody of one report, and ``verify_report``.

The manifest names what was examined (every item in a finding: SHA-256, MD5, PDQ, size,
mtime and every location, and whether the original was read and matched at report time),
with what (tool version, model identity, policy name/version/content hash, catalog version,
flag run), by whom and when (command line, user, host, start and end), and the SHA-256 of
every other file in the report folder. ``verify_report`` recomputes those hashes: a changed,
missing or added file fails verification. The manifest cannot hash itself: record
``manifest_sha256`` (printed by ``audit report`` and ``--verify``) wherever the report is
handed on (a ticket, an e-mail) to make the manifest itself tamper-evident.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.report.data import ReportData
from audit.report.files import PrivateFile, sha256_file

MANIFEST = "manifest.json"
FORMAT = "audit-report-manifest/1"
MAX_MANIFEST_BYTES = 1 << 30  # a manifest lists every item in a finding: large, never unbounded


def item_record(item) -> dict[str, Any]:
    f = item.facts
    return {
        "item_id": item.item_id,
        "sha256": item.item_id,
        "md5": f.get("md5"),
        "pdq": f.get("pdq"),
        "pdq_quality": f.get("pdq_quality"),
        "size": f.get("size"),
        "format": f.get("format"),
        "width": f.get("width"),
        "height": f.get("height"),
        "categories": sorted(set(item.categories)),
        "no_view": item.no_view,
        "present_at_report": item.present,
        "sha256_verified_at_report": item.verified,
        "read_uri": item.read_uri,
        "read_error": item.read_error,
        "locations": [
            {
                k: loc.get(k)
                for k in ("uri", "source", "container", "size", "mtime_ns", "present", "missing_since", "last_seen")
            }
            for loc in item.locations
        ],
    }


def items_record(data: ReportData) -> list[dict[str, Any]]:
    return [item_record(item) for batch in data.item_batches() for item in batch]


def write_manifest(out_dir: Path, data: ReportData, meta: dict[str, Any], files: list[Path]) -> tuple[Path, str]:
    """Write manifest.json listing ``files`` (paths inside ``out_dir``); returns (path, its SHA-256).

    Written piece by piece (its item and finding lists come from ``data``'s batches): the
    same JSON, indented as ``json.dumps(indent=2)`` would, without holding it whole."""
    listed = {}
    for p in sorted(files, key=lambda p: p.name):
        rel = p.relative_to(out_dir).as_posix()
        listed[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    head = {
        "format": FORMAT,
        **meta,
        "index": {"path": data.index_dir, "name": data.index_name, "catalog_version": data.catalog_version},
        "policy": data.policy,
        "model": data.model,
        "flag_run": data.flag_run,
        "previous_report": data.previous_report,
        "notes": data.notes,
        "counts": data.counts(),
    }
    items = (item_record(item) for batch in data.item_batches() for item in batch)
    findings = (
        {
            "finding_id": f.finding_id,
            "item_id": f.item_id,
            "category": f.category,
            "severity": f.severity,
            "status": f.status,
        }
        for batch in data.finding_batches()
        for f in batch
    )
    digest = hashlib.sha256()
    with PrivateFile(out_dir / MANIFEST) as fh:

        def put(text: str) -> None:
            raw = text.encode("utf-8")
            digest.update(raw)
            fh.write(raw)

        put("{")
        first = True
        for key, value in [*head.items(), ("items", items), ("findings", findings), ("files", listed)]:
            put(("" if first else ",") + f"\n  {_dumps(key)}: ")
            first = False
            if isinstance(value, (dict, list)) or value is None or isinstance(value, (str, int, float, bool)):
                put(_dumps(value).replace("\n", "\n  "))
                continue
            n = 0
            for rec in value:
                put(("[\n    " if n == 0 else ",\n    ") + _dumps(rec).replace("\n", "\n    "))
                n += 1
            put("\n  ]" if n else "[]")
        put("\n}\n")
    return fh.path, digest.hexdigest()


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


@dataclass
class VerifyResult:
    ok: bool
    report_dir: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    manifest_sha256: str | None = None
    listed: list[str] = field(default_factory=list)  # the names manifest.json lists

    @property
    def message(self) -> str:
        if self.ok:
            return f"report intact: {self.checked} files match manifest.json (manifest sha256 {self.manifest_sha256})"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"report changed: {self.problems[0]}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "report_dir": self.report_dir,
            "checked": self.checked,
            "problems": self.problems,
            "manifest_sha256": self.manifest_sha256,
        }


def verify_report(report_dir: str | os.PathLike) -> VerifyResult:
    """Recompute every file's SHA-256 against manifest.json.

    Raises ``InputError`` (exit 2) when the folder or its manifest cannot be read as one;
    returns ``ok=False`` with one problem per changed, missing or unlisted file. Nothing is
    read through a symbolic link or from anything but a regular file: a listed name that is
    (or runs through) a symlink, or a fifo or device, is a problem, never opened."""
    from audit.errors import InputError
    from audit.safeio import NotRegularFile, TooLarge, read_regular
    from audit.safejson import loads

    root = Path(report_dir)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    try:
        raw = read_regular(mpath, MAX_MANIFEST_BYTES, nofollow=True)
        manifest = loads(raw)
    except FileNotFoundError:
        raise InputError(f"{root}: no manifest.json (not an audit report folder)") from None
    except (OSError, ValueError, TooLarge, RecursionError) as exc:
        why = exc.strerror if isinstance(exc, (OSError, NotRegularFile)) and exc.strerror else exc
        raise InputError(f"{mpath}: unreadable manifest ({why})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise InputError(f"{mpath}: not an audit report manifest (format {FORMAT!r} expected)")
    listed: dict[str, Any] = manifest["files"]
    res = VerifyResult(
        ok=True, report_dir=str(root), manifest_sha256=hashlib.sha256(raw).hexdigest(), listed=sorted(listed)
    )
    for rel, info in sorted(listed.items()):
        problem = _listed_file_problem(root, rel, info)
        if problem is None:
            res.checked += 1
        else:
            res.problems.append(f"{rel}: {problem}")
    for p in sorted(root.rglob("*")):  # rglob does not descend through symlinked folders
        rel = p.relative_to(root).as_posix()
        if rel != MANIFEST and rel not in listed and (p.is_symlink() or not p.is_dir()):
            res.problems.append(f"{rel}: not listed in manifest.json (added after the report was made)")
    res.ok = not res.problems
    return res


def _listed_file_problem(root: Path, rel: str, info: Any) -> str | None:
    """Why the listed file ``rel`` does not match its manifest entry, or None when it does."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts or "\0" in rel:
        return "unsafe path in manifest"
    where = root
    for part in parts[:-1]:  # every folder on the way must be a real folder, not a symlink
        where = where / part
        try:
            if not stat.S_ISDIR(os.lstat(where).st_mode):
                return "path runs through a symbolic link or a file"
        except FileNotFoundError:
            return "missing"
    p = root / rel
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return "missing"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    want = info.get("sha256") if isinstance(info, dict) else None
    try:
        from audit.safeio import open_regular

        with open_regular(p, nofollow=True) as fh:
            got = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None if got == want else "SHA-256 differs from manifest.json"
