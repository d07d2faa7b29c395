"""The flag stage: detectors (concepts, prompt rules and names, hash banks), combination
flags, clusters, seed neighbours, findings. ``Audit.flag`` / ``audit flag`` call
``run_flag``; ``base.Detector`` is the seam a new kind of evidence plugs into."""

from __future__ import annotations

__all__ = ["run_flag", "FlagOptions", "FlagSummary", "Detector", "Detections", "FlagContext"]


def __getattr__(name: str):
    if name in ("run_flag", "FlagOptions", "FlagSummary", "default_detectors"):
        from audit.flag import runner

        return getattr(runner, name)
    if name in ("Detector", "Detections", "FlagContext"):
        from audit.flag import base

        return getattr(base, name)
    raise AttributeError(f"module 'audit.flag' has no attribute {name!r}")
