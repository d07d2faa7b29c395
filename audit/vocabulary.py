"""The words findings and reviews are made of, defined once.

Severities rank policy categories (and ``--fail-on`` / ``--deny-at`` thresholds), most
severe first. A reviewer's decision on an item, a cluster or a finding is one of
``DECISIONS``; it gives the finding the status ``DECISION_STATUS`` names. A finding no one
decided on is ``new`` (never in a report yet) or ``known`` (reported before).
Importing this module costs nothing: the CLI's option checks use it.
"""

from __future__ import annotations

SEVERITIES = ("critical", "high", "medium", "low")
# severity -> rank (0 = most severe), for sorting
SEVERITY_ORDER = {severity: rank for rank, severity in enumerate(SEVERITIES)}

DECISIONS = ("confirm", "dismiss", "escalate")
DECISION_STATUS = {"confirm": "confirmed", "dismiss": "dismissed", "escalate": "escalated"}
# the statuses a decision gives (a finding with one of them is not a new finding)
DECIDED_STATUSES = ("dismissed", "confirmed", "escalated")
STATUSES = ("new", "known", *DECIDED_STATUSES)


def severities_at_or_above(severity: str) -> tuple[str, ...]:
    """``severity`` and every more severe one; ValueError for an unknown severity."""
    return SEVERITIES[: SEVERITIES.index(severity) + 1]
