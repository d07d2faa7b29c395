"""A module imported on first attribute access.

A rescan (``audit crawl`` over unchanged files) must not pay ~0.3 s for polars or numpy it
never uses; modules that need them only in some methods name them through this instead of
a top-level import.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)
