"""Where the repository and the shared test corpora are, for tests that read files beside the code."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CORPORA = REPO.parent / "shared" / "corpora"
