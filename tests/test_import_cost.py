"""`import audit` and the CLI start cheap: torch, FAISS, open_clip and polars load only when a
verb needs them (a cron job's `audit --help` or a notebook's `import audit` must not pay for
PyTorch). Checked in a fresh interpreter, since this test process has loaded them all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "faiss", "open_clip", "polars")


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import audit",
        "import audit.cli.app",
        # every command registered, as the console script does before it parses the arguments
        "from audit.cli.app import _register_commands; _register_commands()",
        "from audit.cli.app import main\nimport contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])",
    ],
)
def test_heavy_dependencies_stay_unloaded(code):
    assert _loaded_after(code) == []


def test_the_probe_sees_a_heavy_import():
    """The check can fail: importing the library's polars frames does load polars."""
    assert _loaded_after("import audit.frames") == ["polars"]


def test_a_rescan_loads_neither_polars_nor_numpy(tmp_path):
    """`audit crawl` over unchanged files (the cron job's usual run) imports only what it
    uses: numpy, PIL and the decoders load once a file must be read, polars never."""
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(src / f"{i}.png")
    crawl = (
        f"from audit.cli.app import main\nimport sys\n"
        f"assert main(['crawl', {str(src)!r}, '--index', {str(tmp_path / 'idx')!r}, '-q']) == 0"
    )
    probe = (
        f"{crawl}\nimport json\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {{'numpy', 'polars', 'PIL'}})))"
    )

    def loaded() -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert "numpy" in loaded()  # the first crawl reads (and the probe sees it)
    assert loaded() == []  # the rescan reads nothing
