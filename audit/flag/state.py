"""What a flag run keeps between runs, so that the next run handles only what is new.

State is kept per *scope*: one policy (content hash) and one model key. Tables:

* ``flag_scopes``: the scope's progress: ``state`` (``complete``, or ``full`` /
  ``incremental`` while a run of that kind is under way: a run that finds ``full`` knows the
  previous full run was killed and starts over), ``seq_done`` (the highest ``items.seq`` the
  last completed run handled), ``vectors_seen`` (image vectors of the model then),
  ``decisions_seen``, and the clusters' training facts (``k``, ``trained_items``,
  ``trained_run``), ``learned_fp`` (the learned models the evidence was scored with);
* ``flag_centroids``: the scope's k-means centroids (float32 blobs), kept until re-clustering;
* ``cluster_members``: item → semantic cluster and cosine to its centroid;
* ``cluster_terms``: per cluster, how many member prompts hold each word (top terms);
* ``cluster_state``: per flagged cluster, the fingerprint its "via cluster" signals were made
  for (they are remade only when it changes or new members arrive);
* ``flag_pending``: items handled without an image vector (they are handled again once the
  vector exists);
* ``flag_signals``: the evidence of each (item, category) by source: ``0direct`` (the item's
  own signals), ``1cluster:<id>``, ``2seed:<item>``; a finding is their union;
* ``flag_suppressed``: items a negative bank clears, with the categories;
* ``dup_groups``: near-duplicate groups as a union-find table, item → root (the group's
  smallest item id); items in no group have no row;
* ``pdq_bands``: 8 bands of 32 bits of each grouped-eligible PDQ hash (item named by the first
  60 bits of its id), so a new hash finds its candidates by lookup;
* ``seed_neighbors``: each confirmed seed's current nearest neighbours.

The tables are made at open (``audit.catalog.migrations``). Every write happens inside the
run's per-batch transactions, so a SIGKILL leaves a state the
next run either resumes (incremental: handling an item twice is idempotent) or rebuilds (full).
"""

from __future__ import annotations

import sqlite3

# Tables whose rows belong to one scope (cleared by a full run).
SCOPED_TABLES = (
    "flag_centroids",
    "cluster_members",
    "cluster_terms",
    "cluster_state",
    "flag_pending",
    "flag_signals",
    "flag_suppressed",
    "dup_groups",
    "pdq_bands",
    "seed_neighbors",
)


def scope_row(conn: sqlite3.Connection, policy_hash: str, model_key: str) -> dict | None:
    cur = conn.execute("SELECT * FROM flag_scopes WHERE policy_hash=? AND model_key=?", (policy_hash, model_key))
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row))


def open_scope(c: sqlite3.Connection, policy_hash: str, model_key: str) -> int:
    c.execute(
        "INSERT INTO flag_scopes (policy_hash, model_key) VALUES (?,?) ON CONFLICT DO NOTHING", (policy_hash, model_key)
    )
    return int(
        c.execute(
            "SELECT scope FROM flag_scopes WHERE policy_hash=? AND model_key=?", (policy_hash, model_key)
        ).fetchone()[0]
    )


def reset_scope(c: sqlite3.Connection, scope: int) -> None:
    """A full run starts from nothing (inside the caller's transaction)."""
    for table in SCOPED_TABLES:
        c.execute(f"DELETE FROM {table} WHERE scope = ?", (scope,))
    c.execute(
        "UPDATE flag_scopes SET state='full', seq_done=0, vectors_seen=0, k=NULL, trained_items=NULL, "
        "trained_run=NULL WHERE scope=?",
        (scope,),
    )
