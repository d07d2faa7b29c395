"""``check_device``: the ``--device`` of every command, checked before any work.

``cpu``, ``cuda``, ``cuda:N`` and ``auto`` (CUDA where this machine can give it, else the
CPU) are accepted (case-insensitive, returned lower-case; ``auto`` as what it chose). A
malformed value is a usage error (exit 2); CUDA that this machine cannot give (torch built
without CUDA, no driver, ``CUDA_VISIBLE_DEVICES`` hiding every GPU, ``N`` out of range) is an
environment error (exit 3) naming what was asked and what is there. torch is imported only
for a CUDA device, so ``cpu`` costs nothing (a scan with nothing to embed stays fast).
Apple ``mps`` is not supported: the embedder's precision choice knows CPU and CUDA only.
"""

from __future__ import annotations

import re

from audit.errors import EnvironmentProblem, UsageError

__all__ = ["check_device", "cpu_flags", "DEVICE_HELP"]

DEVICE_HELP = "cpu, cuda, cuda:N or auto"
_DEVICE = re.compile(r"(cpu|cuda)(?::(\d{1,3}))?")


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (``avx512_vnni``, ``amx_bf16``, ...); None
    where that file cannot be read (not Linux): each caller decides what unknown means."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return flags


def check_device(device: object, flag: str = "--device", *, probe: bool = True) -> str:
    """``device`` normalised (``"cpu"``, ``"cuda"``, ``"cuda:1"``), or a one-line error.
    ``probe=False``: the spelling only (``--executor ray``: the GPUs are on the workers)."""
    if not isinstance(device, str):
        raise UsageError(f"{flag} must be {DEVICE_HELP}, not {device!r}")
    value = device.strip().lower()
    if value == "auto":
        if not probe:  # the workers' GPUs are not visible from here
            raise UsageError(f"{flag} auto chooses from this machine's devices; with --executor ray name cpu or cuda")
        return "cuda" if _cuda_usable() else "cpu"
    match = _DEVICE.fullmatch(value)
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise UsageError(f"{flag} must be {DEVICE_HELP}, not {device!r}")
    if value == "cpu" or not probe:
        return value
    _check_cuda(value, None if match.group(2) is None else int(match.group(2)), flag)
    return value


def _cuda_usable() -> bool:
    """Whether torch is installed, built with CUDA and sees at least one device."""
    try:
        import torch

        return bool(torch.cuda.is_available()) and int(torch.cuda.device_count()) > 0
    except Exception:  # noqa: BLE001 - no torch, or a broken driver: the CPU it is
        return False


def _check_cuda(value: str, ordinal: int | None, flag: str) -> None:
    try:
        import torch
    except ImportError:
        raise EnvironmentProblem(f"{flag} {value}: torch is not installed") from None
    built = getattr(torch.version, "cuda", None)
    try:
        available = bool(torch.cuda.is_available())
        count = int(torch.cuda.device_count()) if available else 0
    except Exception as exc:  # noqa: BLE001 - a broken driver raises from inside torch
        raise EnvironmentProblem(f"{flag} {value}: CUDA cannot be initialised ({exc})".splitlines()[0]) from None
    if not available or count == 0:
        why = (
            f"this torch {torch.__version__} was built without CUDA"
            if not built
            else f"torch {torch.__version__} (CUDA {built}) sees no CUDA device"
        )
        raise EnvironmentProblem(f"{flag} {value} was asked for, but {why}; use --device cpu")
    if ordinal is not None and ordinal >= count:
        shown = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise EnvironmentProblem(
            f"{flag} {value} was asked for, but this machine has {count} CUDA "
            f"device{'s' if count != 1 else ''} ({shown})"
        )
