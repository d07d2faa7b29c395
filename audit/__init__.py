"""audit: batch audit and forensics for archives of AI-generated images.

Importing this module is cheap; heavy dependencies load when a verb needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from audit.api import Audit


def open(index_dir, *, create: bool = False) -> "Audit":  # noqa: A001 - the verb users expect
    """Open the index directory ``index_dir`` for investigation (or create it)."""
    from audit.api import Audit

    return Audit(index_dir, create=create)


def crawl(sources, index_dir, **options):
    """Catalog ``sources`` into ``index_dir``; returns a ``CrawlSummary``.

    Every SOURCE is checked before the index is created or anything is read."""
    from audit.ingest import open_source

    if isinstance(sources, (str, bytes)) or hasattr(sources, "__fspath__"):
        sources = [sources]
    opened = [open_source(str(s), trust_dir_mtime=options.get("trust_dir_mtime", False)) for s in sources]
    return open(index_dir, create=True).crawl(opened, **options)


def load_policy(path=None):
    """Load and validate a policy file (``None``: the packaged default policy)."""
    from audit.policy import load_policy as _load

    return _load(path)


def scan(sources, index_dir, **options):
    """Run every stage on ``sources`` into ``index_dir``; returns a ``ScanSummary``."""
    return open(index_dir, create=True).scan(sources, **options)
