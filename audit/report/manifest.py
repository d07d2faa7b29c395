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
from audit.report.files import sha256_file, write_private

MANIFEST = "manifest.json"
FORMAT = "audit-report-manifest/1"


def items_record(data: ReportData) -> list[dict[str, Any]]:
    out = []
    for item_id in sorted(data.items):
        item = data.items[item_id]
        f = item.facts
        out.append({
            "item_id": item_id, "sha256": item_id, "md5": f.get("md5"), "pdq": f.get("pdq"),
            "pdq_quality": f.get("pdq_quality"), "size": f.get("size"), "format": f.get("format"),
            "width": f.get("width"), "height": f.get("height"),
            "categories": sorted(set(item.categories)), "no_view": item.no_view,
            "present_at_report": item.present, "sha256_verified_at_report": item.verified, "read_uri": item.read_uri,
            "read_error": item.read_error,
            "locations": [{k: loc.get(k) for k in ("uri", "source", "container", "size", "mtime_ns", "present",
                                                    "missing_since", "last_seen")} for loc in item.locations],
        })  # fmt: skip
    return out


def write_manifest(out_dir: Path, data: ReportData, meta: dict[str, Any], files: list[Path]) -> tuple[Path, str]:
    """Write manifest.json listing ``files`` (paths inside ``out_dir``); returns (path, its SHA-256)."""
    listed = {}
    for p in sorted(files, key=lambda p: p.name):
        rel = p.relative_to(out_dir).as_posix()
        listed[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    manifest = {
        "format": FORMAT,
        **meta,
        "index": {"path": data.index_dir, "name": data.index_name, "catalog_version": data.catalog_version},
        "policy": data.policy,
        "model": data.model,
        "flag_run": data.flag_run,
        "previous_report": data.previous_report,
        "notes": data.notes,
        "counts": data.counts(),
        "items": items_record(data),
        "findings": [{"finding_id": f.finding_id, "item_id": f.item_id, "category": f.category,
                      "severity": f.severity, "status": f.status} for f in data.findings],  # fmt: skip
        "files": listed,
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False, default=str, sort_keys=False) + "\n"
    path = write_private(out_dir / MANIFEST, text)
    return path, hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class VerifyResult:
    ok: bool
    report_dir: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    manifest_sha256: str | None = None

    @property
    def message(self) -> str:
        if self.ok:
            return f"report intact: {self.checked} files match manifest.json (manifest sha256 {self.manifest_sha256})"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"report changed: {self.problems[0]}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "report_dir": self.report_dir, "checked": self.checked, "problems": self.problems,
                "manifest_sha256": self.manifest_sha256}  # fmt: skip


def verify_report(report_dir: str | os.PathLike) -> VerifyResult:
    """Recompute every file's SHA-256 against manifest.json.

    Raises ``InputError`` (exit 2) when the folder or its manifest cannot be read as one;
    returns ``ok=False`` with one problem per changed, missing or unlisted file."""
    from audit.errors import InputError

    root = Path(report_dir)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    try:
        raw = mpath.read_bytes()
        manifest = json.loads(raw)
    except FileNotFoundError:
        raise InputError(f"{root}: no manifest.json (not an audit report folder)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{mpath}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise InputError(f"{mpath}: not an audit report manifest (format {FORMAT!r} expected)")
    res = VerifyResult(ok=True, report_dir=str(root), manifest_sha256=hashlib.sha256(raw).hexdigest())
    listed: dict[str, Any] = manifest["files"]
    for rel, info in sorted(listed.items()):
        p = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            res.problems.append(f"{rel}: unsafe path in manifest")
            continue
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            res.problems.append(f"{rel}: missing")
            continue
        if not stat.S_ISREG(st.st_mode):
            res.problems.append(f"{rel}: not a regular file")
            continue
        res.checked += 1
        if sha256_file(p) != (info or {}).get("sha256"):
            res.problems.append(f"{rel}: SHA-256 differs from manifest.json")
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel != MANIFEST and rel not in listed and not p.is_dir():
            res.problems.append(f"{rel}: not listed in manifest.json (added after the report was made)")
    res.ok = not res.problems
    return res
