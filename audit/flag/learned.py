"""Review decisions as labels, and a flagger that learns from them.

``decided_labels``: the latest decision per (item, category) through the review API
(``audit.review.latest_by_target``: item-level decisions, cluster decisions as logged for
their members, and finding-level ones; the latest wins). An item decision without a category
applies to every category the item has a finding in.
"""

from __future__ import annotations

LABELS = {"confirm": 1, "dismiss": 0}


def decided_labels(conn) -> dict[tuple[str, str], tuple[int, int]]:
    """(item_id, category) -> (label 1 confirm / 0 dismiss, decision id) of the latest
    confirm/dismiss decision that holds for the pair (escalations are no label)."""
    from audit.review import latest_by_target

    items, findings = latest_by_target(conn)
    out: dict[tuple[str, str], tuple[int, int]] = {}

    def put(key, d):
        if d.decision in LABELS and (key not in out or out[key][1] < d.decision_id):
            out[key] = (LABELS[d.decision], d.decision_id)

    owners: dict[str, tuple[str, str]] = {}
    if findings or any(d.category is None for d in items.values()):
        owners = {fid: (item, cat) for fid, item, cat in conn.execute(
            "SELECT finding_id, item_id, category FROM findings")}
    by_item: dict[str, set[str]] = {}
    for item, cat in owners.values():
        by_item.setdefault(item, set()).add(cat)
    for item_id, d in items.items():
        for cat in ([d.category] if d.category else sorted(by_item.get(item_id, ()))):
            put((item_id, cat), d)
    for fid, d in findings.items():
        if fid in owners:
            put(owners[fid], d)
    return out
