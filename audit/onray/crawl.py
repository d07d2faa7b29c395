"""``RayReadPool``: the crawl's reads (bytes, hashes, PDQ, metadata) as Ray tasks.

The crawl is a stream that the driver steers as it lists: unchanged files are settled by
catalog lookups without being read, in-memory archive members are held to a byte budget
(``CRAWL_DATA_BUDGET``), and an archive counts as done only once all its members are
committed. Ray Data plans a dataset from a known input, which that feedback loop is not,
so the reads are plain Ray tasks submitted by the same ``Crawler`` code that feeds the
local process pool (``submit`` returns a ``concurrent.futures.Future``), with the same
budgets and the same commits. A task whose worker dies is re-run by Ray (``max_retries``);
its results are committed once, when its future resolves.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from typing import Callable

from audit.onray.embed import RETRIES, _maybe_kill_self

CHECK_PATHS = 16  # paths of the first task fingerprinted on every node (manifests name files anywhere)
_CALLS = 0  # tasks run in this worker process (for the tests' kill-once fault)


def _read_task(fn: Callable, task: list):
    global _CALLS
    _maybe_kill_self(_CALLS)
    _CALLS += 1
    return fn(task)


class RayReadPool:
    def __init__(self, ray):
        self.ray = ray
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        env = {"env_vars": {k: os.environ[k] for k in ("AUDIT_RAY_KILL_ONCE",) if os.environ.get(k)}}
        opts = {"num_cpus": 1, "max_retries": RETRIES}
        if env["env_vars"]:
            opts["runtime_env"] = env
        self._remote = ray.remote(**opts)(_read_task)
        self._refs: dict[Future, object] = {}
        self._checked = False

    def submit(self, fn: Callable, task: list) -> Future:
        if not self._checked:
            from audit.onray.nodes import check_paths

            check_paths(self.ray, [e.path for e in task if e.data is None and e.path][:CHECK_PATHS], what="file")
            self._checked = True
        ref = self._remote.remote(fn, task)
        fut = ref.future()
        self._refs[fut] = ref
        fut.add_done_callback(lambda f: self._refs.pop(f, None))
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if cancel_futures:
            for ref in list(self._refs.values()):
                try:
                    self.ray.cancel(ref)
                except Exception:  # noqa: BLE001 - already finished or the cluster is gone
                    pass
        self._refs.clear()
