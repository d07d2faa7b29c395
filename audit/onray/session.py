"""Connecting to Ray: ``RAY_ADDRESS`` names a cluster (Ray's own convention; ``auto`` on
a cluster node), otherwise a local Ray instance is started for this run and stopped after.

A Ray already initialised in this process (a notebook, the tests) is used as it is and
left running.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

from audit.errors import EnvironmentProblem

INSTALL_HINT = 'pip install ".[ray]"'


def require_ray():
    """The ``ray`` module (with Ray Data), or a one-line ``EnvironmentProblem`` (exit 3)."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is what the pipelines run on
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "ray"
        raise EnvironmentProblem(
            f"--executor ray needs Ray Data ({missing} is not installed): {INSTALL_HINT}"
        ) from None
    return ray


def _quiet_ray_data(ray) -> None:
    """No progress bars or per-dataset INFO lines: the CLI draws its own progress."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    for attr in ("enable_operator_progress_bars", "print_on_execution_start"):
        if hasattr(ctx, attr):
            setattr(ctx, attr, False)
    ctx.execution_options.verbose_progress = False
    for name in ("ray.data", "ray._private.worker", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def ray_session(*, num_cpus: int | None = None, object_store_memory: int | None = None) -> Iterator[object]:
    """Ray connected for the duration of a run; yields the ``ray`` module."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS", "").strip()
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                # address="local": a new instance for this run. Without it Ray connects to
                # whatever cluster /tmp/ray/ray_current_cluster names, even one long dead.
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    object_store_memory=object_store_memory,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
        except ConnectionError as exc:
            raise EnvironmentProblem(
                f"cannot connect to the Ray cluster at RAY_ADDRESS={address}: {str(exc).splitlines()[0]}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - Ray raises many types for a cluster it cannot start or reach
            where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray instance"
            raise EnvironmentProblem(
                f"cannot start {where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        started = True
    _quiet_ray_data(ray)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def cluster_resources(ray) -> dict[str, float]:
    return dict(ray.cluster_resources())
