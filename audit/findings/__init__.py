"""Signals, clusters, findings and review decisions: what the policy engine concluded and
what reviewers decided. ``store.py`` is the seam between the engine that writes them and
the report writers, notebooks and CLI that read them."""
