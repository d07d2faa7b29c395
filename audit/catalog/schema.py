"""Columns of the catalog's main tables (SQLite, one file per index directory); the tables
themselves are made by ``audit.catalog.migrations``.

``items`` holds one row per content (item_id = SHA-256 of the bytes); ``locations`` one
row per place that content was found. An item that could not be read at all (the file
vanished, permission denied) has a location row with status ``error`` and no item_id.
"""

from __future__ import annotations

# The items table as migration 1 (audit.catalog.migrations) makes it. Frozen: a column added
# later comes with a migration of its own and is appended to ITEM_COLUMNS after these.
ITEM_COLUMNS_1: tuple[tuple[str, str], ...] = (
    ("item_id", "TEXT PRIMARY KEY"),
    ("size", "INTEGER"),
    ("status", "TEXT NOT NULL"),  # ok | error (content could not be decoded)
    ("error", "TEXT"),
    ("format", "TEXT"),
    ("width", "INTEGER"),
    ("height", "INTEGER"),
    ("frames", "INTEGER"),
    ("md5", "TEXT"),
    ("pdq", "TEXT"),
    ("pdq_quality", "INTEGER"),
    ("generator", "TEXT"),
    ("prompt", "TEXT"),
    ("negative_prompt", "TEXT"),
    ("seed", "TEXT"),
    ("steps", "INTEGER"),
    ("sampler", "TEXT"),
    ("scheduler", "TEXT"),
    ("cfg_scale", "REAL"),
    ("model", "TEXT"),
    ("model_hash", "TEXT"),
    ("resources", "TEXT"),  # JSON list of {kind, name, hash, weight}
    ("metadata_found", "TEXT"),  # JSON list of "generator@location"
    ("metadata_errors", "TEXT"),  # JSON list of problems with the metadata
    ("extra", "TEXT"),  # JSON object: clip_skip, samplers, sizes, ...
    ("raw_metadata", "TEXT"),  # JSON list of {location, key, text}, verbatim
    ("first_seen", "TEXT NOT NULL"),
    ("last_seen", "TEXT NOT NULL"),
    # JSON list of short one-line strings: what the decoder reported (Python warnings,
    # libtiff's stderr, "image data truncated: decoded partially (...)"); NULL when none.
    ("warnings", "TEXT"),
    # Change sequence: a catalog-wide counter, set when the row is inserted and raised when
    # what the flag stage reads of it changes (status, prompts, hashes, resources). Stages
    # that follow the catalog keep the highest seq they have seen and read only rows above.
    ("seq", "INTEGER"),
    # JSON object (audit.provenance): C2PA manifest (generator, actions, signer, validation)
    # and IPTC DigitalSourceType; NULL when the file states neither. Added after seq: older
    # catalogs gain it by ALTER TABLE (migration 1 adopting them), so both orders are the same.
    ("provenance", "TEXT"),
    # JSON list of {frame, pdq, quality}: sampled frames after frame 0 of an animation
    # (audit.animation); NULL for still images
    ("frame_pdq", "TEXT"),
    # JSON list of [pdq hex, quality, frame number, seconds]: the vPDQ hash of a video
    # (audit.video), one PDQ a second; NULL for images
    ("video_hash", "TEXT"),
    # audit.crawler.worker.READER_VERSION of the reader that wrote the row: NULL for rows read
    # before provenance, frames and video hashes existed. ``audit crawl --reread`` re-reads
    # the files of rows under the current version (and error rows) even when unchanged.
    ("reader_version", "INTEGER"),
)
ITEM_COLUMNS = ITEM_COLUMNS_1

# What of an item, when it changes on a re-read, makes it new to the later stages.
SEQ_FIELDS = (
    "status",
    "prompt",
    "negative_prompt",
    "md5",
    "pdq",
    "model",
    "model_hash",
    "resources",
    "provenance",
    "frame_pdq",
    "video_hash",
)

# The locations table as migration 1 makes it (frozen, as ITEM_COLUMNS_1).
LOCATION_COLUMNS_1: tuple[tuple[str, str], ...] = (
    ("uri", "TEXT PRIMARY KEY"),
    ("item_id", "TEXT"),
    ("source", "TEXT NOT NULL"),
    ("container", "TEXT"),  # archive or manifest uri the location was listed from
    ("size", "INTEGER"),
    ("mtime_ns", "INTEGER"),
    ("status", "TEXT NOT NULL"),  # ok | error | missing
    ("error", "TEXT"),
    ("present", "INTEGER NOT NULL"),  # 0 once the file is gone
    ("first_seen", "TEXT NOT NULL"),
    ("last_seen", "TEXT NOT NULL"),
    ("missing_since", "TEXT"),
    ("seen_run", "INTEGER"),  # run that last wrote it
    # root_uri of the complete source (folder, archive) that owns it; such locations are not
    # rewritten when unchanged: their last_seen is that of the root's latest complete scan.
    ("root", "TEXT"),
)
LOCATION_COLUMNS = LOCATION_COLUMNS_1
