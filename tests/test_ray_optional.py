"""Ray is optional: ``import audit`` and the CLI never import it, and ``--executor ray``
without the extra is one line naming ``pip install ".[ray]"`` (exit 3), before any work."""

from __future__ import annotations

import subprocess
import sys

from tests.paths import REPO

NO_RAY = "import sys; sys.modules['ray'] = None; sys.modules['ray.data'] = None\n"  # import ray -> ImportError


def test_import_audit_and_the_cli_stay_free_of_ray():
    code = "import sys, audit, audit.api, audit.scan, audit.cli.app, audit.embed.api, audit.onray; assert 'ray' not in sys.modules, 'ray imported'"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr


def _cli_without_ray(*args: str) -> subprocess.CompletedProcess:
    code = NO_RAY + f"sys.argv = ['audit', *{list(args)!r}]\nfrom audit.cli.app import run\nrun()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_executor_ray_without_the_extra_is_one_line_exit_3(tmp_path):
    for cmd in (["crawl", str(REPO / "samples" / "archive")], ["embed"], ["scan", str(REPO / "samples" / "archive")]):
        res = (
            _cli_without_ray(*cmd, "--index", str(tmp_path / "idx"), "--executor", "ray", "--model", "toy-shapes")
            if cmd[0] != "crawl"
            else _cli_without_ray(*cmd, "--index", str(tmp_path / "idx"), "--executor", "ray")
        )
        assert res.returncode == 3, (cmd, res.stderr)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and 'pip install ".[ray]"' in lines[0], res.stderr
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "idx" / "catalog.sqlite").exists()  # nothing was started
