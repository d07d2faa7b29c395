"""Options with a fixed vocabulary are checked before any work: empty or unknown values are
usage errors (exit 2, one line), a CUDA device this machine cannot give is exit 3."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from audit.errors import EnvironmentProblem, UsageError
from audit.errors import ExitCode
from tests.cli_helper import audit_cli
from tests.toy_world import make_archive_dir

try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    HAS_CUDA = False

needs_no_cuda = pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: the exit-3 path cannot be shown")

# (command args after `--index IDX`, the option the one-line error must name)
USAGE_CASES = [
    (["scan", "SRC", "--fail-on", ""], "--fail-on"),
    (["scan", "SRC", "--fail-on", "severe"], "--fail-on"),
    (["scan", "SRC", "--fail-on", "Critical"], "--fail-on"),
    (["scan", "SRC", "--device", ""], "--device"),
    (["scan", "SRC", "--device", "gpu"], "--device"),
    (["scan", "SRC", "--device", "cuda:"], "--device"),
    (["scan", "SRC", "--device", "cpu:0"], "--device"),
    (["scan", "SRC", "--device", "cuda:-1"], "--device"),
    (["embed", "--precision", ""], "--precision"),
    (["embed", "--precision", "fp64"], "--precision"),
    (["embed", "--device", "tpu"], "--device"),
    (["flag", "--device", ""], "--device"),
    (["search", "--text", "a red circle", "--space", ""], "--space"),
    (["search", "--text", "a red circle", "--space", "text"], "--space"),
    (["search", "--text", "a red circle", "--device", "cuda0"], "--device"),
    (["review", "--item", "abc", "--decision", ""], "--decision"),
    (["review", "--item", "abc", "--decision", "approve"], "--decision"),
    (["report", "--format", ""], "--format"),
    (["report", "--format", "html,pdf"], "pdf"),
    (["index", "--index-type", ""], "--index-type"),
    (["index", "--index-type", "ivf,zz"], "index type"),
]


def _run_in_process(args: list[str], capsys) -> tuple[int, str]:
    from audit.cli.app import main

    term = signal.getsignal(signal.SIGTERM)
    try:
        code = main(args)
    finally:
        signal.signal(signal.SIGTERM, term)  # main() installs its own; leave pytest's in place
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args,option", USAGE_CASES, ids=[" ".join(a) or "''" for a, _ in USAGE_CASES])
def test_bad_values_are_one_line_usage_errors_before_any_work(tmp_path, capsys, args, option):
    idx = tmp_path / "idx"  # does not exist: an error about the index would mean work came first
    src = tmp_path / "src"
    src.mkdir()
    args = [str(src) if a == "SRC" else a for a in args]
    code, err = _run_in_process([args[0], "--index", str(idx), *args[1:]], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audit: error:") and option in lines[0], err
    assert not idx.exists()


@needs_no_cuda
@pytest.mark.parametrize("command", [["scan", "SRC"], ["embed"], ["flag"], ["search", "--text", "a red circle"]])
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "CUDA:3"])
def test_cuda_without_cuda_is_an_environment_error_before_any_work(tmp_path, capsys, command, device):
    idx = tmp_path / "idx"
    src = tmp_path / "src"
    src.mkdir()
    args = [str(src) if a == "SRC" else a for a in command]
    code, err = _run_in_process([args[0], "--index", str(idx), *args[1:], "--device", device], capsys)
    assert code == 3, err
    (line,) = err.strip().splitlines()
    assert line.startswith("audit: error: --device ") and device.lower() in line and "CUDA" in line
    assert not idx.exists()


@needs_no_cuda
def test_cuda_is_checked_even_when_there_is_nothing_to_embed(tmp_path):
    import audit

    make_archive_dir(tmp_path / "archive", 3)
    a = audit.open(tmp_path / "idx", create=True)
    a.crawl([tmp_path / "archive"], workers=0)
    a.embed(model="toy-shapes", workers=0)
    res = audit_cli(
        "embed",
        "--index",
        tmp_path / "idx",
        "--model",
        "toy-shapes",
        "--device",
        "cuda",
        "--quiet",
        expected=ExitCode.ENVIRONMENT,
    )
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "CUDA" in res.stderr
    # the same with cpu: nothing to do, and no torch import on that path
    script = (
        "import sys; from audit.cli.app import main; "
        f"rc = main(['embed', '--index', {str(tmp_path / 'idx')!r}, '--model', 'toy-shapes', '--quiet']); "
        "print(rc, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["0", "False"], out.stderr


def test_library_entry_points_check_their_options(tmp_path):
    import audit
    from audit.scan import run_scan

    make_archive_dir(tmp_path / "archive", 2)
    a = audit.open(tmp_path / "idx", create=True)
    with pytest.raises(UsageError, match="--fail-on"):
        run_scan(a, [tmp_path / "archive"], fail_on="")
    with pytest.raises(UsageError, match="--device"):
        a.embed(model="toy-shapes", device="gpu")
    with pytest.raises(UsageError, match="--precision"):
        a.embed(model="toy-shapes", precision="fp8")
    with pytest.raises(UsageError, match="--device"):
        a.flag(device="")
    with pytest.raises(UsageError, match="--device"):
        a.scan([tmp_path / "archive"], device="cuda:x")
    assert a.items().is_empty()  # nothing was crawled before the errors


def test_check_device_normalises_and_imports_torch_only_for_cuda():
    script = (
        "import sys; from audit.embed.device import check_device; print(check_device(' CPU '), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["cpu", "False"], out.stderr


def test_cuda_ordinal_out_of_range_names_what_is_there(monkeypatch):
    # The CUDA path cannot run on this CPU-only machine; this pins the range check and its
    # message with torch.cuda answering as a two-GPU machine would.
    torch = pytest.importorskip("torch")
    from audit.embed.device import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda") == "cuda" and check_device("Cuda:1") == "cuda:1"
    with pytest.raises(
        EnvironmentProblem,
        match=r"--device cuda:2 was asked for, but this machine has 2 CUDA "
        r"devices \(cuda:0 to cuda:1\)",
    ):
        check_device("cuda:2")
