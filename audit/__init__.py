"""audit: batch audit and forensics for archives of AI-generated images.

Importing this module is cheap; heavy dependencies load when a verb needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from audit.api import Audit


def open(index_dir, *, read_only: bool = False, create: bool = False) -> "Audit":  # noqa: A001 - the verb users expect
    """Open the existing index ``index_dir`` for investigation; never creates one.

    Where the index cannot be written (a read-only evidence copy), or with
    ``read_only=True``, it opens read-only: ``.read_only`` is True and everything that only
    reads works. A missing index raises ``IndexMissing``; an empty or damaged catalog
    ``CatalogDamaged``, and the file is left as it is. ``create=True`` is for the crawl and
    scan paths (``audit.crawl``, ``audit.scan``): it makes a new index where none exists."""
    from audit.api import Audit

    return Audit(index_dir, create=create, read_only=read_only)


def crawl(sources, index_dir, **options):
    """Catalog ``sources`` into ``index_dir``; returns a ``CrawlSummary``.

    Every SOURCE is checked before the index is created or anything is read."""
    from audit.ingest import open_source

    if isinstance(sources, (str, bytes)) or hasattr(sources, "__fspath__"):
        sources = [sources]
    opened = [open_source(str(s), trust_dir_mtime=options.get("trust_dir_mtime", False)) for s in sources]
    with open(index_dir, create=True) as a:
        return a.crawl(opened, **options)


def load_policy(path=None):
    """Load and validate a policy file (``None``: the packaged default policy)."""
    from audit.policy import load_policy as _load

    return _load(path)


def scan(sources, index_dir, **options):
    """Run every stage on ``sources`` into ``index_dir``; returns a ``ScanSummary``."""
    with open(index_dir, create=True) as a:
        return a.scan(sources, **options)


def check_prompt(prompt, negative_prompt=None, resources=(), *, policy=None, embedder=None, deny_at="low"):
    """Request-time gate: ``{"verdict": "allow"|"deny", "categories", "signals"}`` for one
    generation request, from the policy's prompt rules, names, resource lists and (with a
    CLIP ``embedder``) prompt concepts. See ``audit.policy.gate.PromptGate`` for batches."""
    from audit.policy.gate import check_prompt as _check

    return _check(prompt, negative_prompt, resources, policy=policy, embedder=embedder, deny_at=deny_at)
