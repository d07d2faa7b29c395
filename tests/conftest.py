"""Shared fixtures. Plain helper functions live in helper modules (``tests/toy_world.py``,
``tests/cli_helper.py``, ...), imported as ``from tests.<module> import name``, never from here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.toy_world import make_archive_dir


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    make_archive_dir(root)
    return root
