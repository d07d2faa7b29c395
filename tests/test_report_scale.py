"""The report of an index with 100k findings is complete and written in bounded memory.

The index (50k items, two findings each, 200 clusters) is built through the stores' API.
The report runs in a fresh process whose peak RSS is measured above its resident size
just before the report (VmHWM reset): loading every finding, item and record at once, as
reports did before, rose by more than 1 GB on this index; streamed it stays well below."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import audit
from audit.report import verify_report

from tests.scale_fixtures import build_scale_index

pytestmark = pytest.mark.slow

N_ITEMS = 50_000
HTML_LIMIT = 300
MAX_RISE_MB = 400  # streamed: ~230 MB measured; everything at once: ~1,150 MB

_PROBE = r"""
import json, sys, time
import audit
import audit.report, audit.report.html, pyarrow.parquet  # imports are not the report's memory
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))
a = audit.open(sys.argv[1])
with open("/proc/self/clear_refs", "w") as fh:  # resets the peak (VmHWM) to the resident size now
    fh.write("5")
base = status("VmRSS")
t = time.time()
s = a.report(sys.argv[2], html_limit=int(sys.argv[3]))
print(json.dumps({"seconds": time.time() - t, "rise_mb": (status("VmHWM") - base) / 1024, "counts": s.counts}))
"""


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return build_scale_index(
        tmp_path_factory.mktemp("report-scale") / "idx", n_items=N_ITEMS, findings_per_item=2, n_clusters=200
    )


def test_report_of_100k_findings_is_complete_in_bounded_memory(big, tmp_path):
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(Path(audit.__file__).parent.parent)}
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, str(big.index), str(out), str(HTML_LIMIT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["rise_mb"] < MAX_RISE_MB, got
    counts = got["counts"]
    assert counts["findings"] == big.n_findings and counts["items"] == N_ITEMS
    assert counts["missing_items"] == N_ITEMS  # no original exists: every item is reported missing

    with audit.open(big.index, read_only=True) as a:
        want = set(a.findings(lazy=True).select("finding_id").collect()["finding_id"].to_list())
    assert len(want) == big.n_findings
    lines = (out / "findings.jsonl").read_text("utf-8").splitlines()
    ids = [json.loads(line)["finding_id"] for line in lines]
    assert len(ids) == big.n_findings and set(ids) == want
    first = json.loads(lines[0])
    assert first["severity"] == "critical" and first["missing"] is True and first["locations"]
    assert pq.read_metadata(out / "findings.parquet").num_rows == big.n_findings
    with open(out / "findings.csv", "rb") as fh:
        assert sum(1 for _ in fh) == big.n_findings + 1  # header; no field holds a newline here
    clusters = (out / "clusters.jsonl").read_text("utf-8").splitlines()
    assert len(clusters) == 200 and len(json.loads(clusters[0])["members"]) == N_ITEMS // 200

    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert len(manifest["items"]) == N_ITEMS and len(manifest["findings"]) == big.n_findings
    assert [i["item_id"] for i in manifest["items"]] == sorted(i["item_id"] for i in manifest["items"])
    assert manifest["counts"]["findings"] == big.n_findings
    assert verify_report(out).ok

    page = (out / "index.html").read_text("utf-8")
    assert page.count('<article class="finding') == HTML_LIMIT
    assert f"the other {big.n_findings - HTML_LIMIT:,} are in findings.jsonl" in page
    assert f"critical <b>{counts['by_severity']['critical']}</b>" in page  # counts of every finding, not the page's
