"""``audit crawl --reread``: files crawled before the reader knew provenance, animation frames
and video hashes keep their old rows while unchanged; ``--reread`` reads those again (rows of
an older ``READER_VERSION``, or that failed to decode), ``--reread-all`` every file. The
"old catalog" is a real crawl whose rows are turned back into what the previous reader wrote
(the new facts and the version NULL)."""

from __future__ import annotations

import io
import json
import sqlite3

from PIL import Image

import audit
from audit.crawler.worker import READER_VERSION
from tests.c2pa_fixtures import xmp_packet
from tests.cli_helper import audit_cli
from tests.toy_world import write_generation

FACTS = ("provenance", "frame_pdq", "reader_version")


def _source(tmp_path):
    src = tmp_path / "src"
    write_generation(src / "still.png", "blue", "circle")
    write_generation(src / "other.png", "green", "square")
    frames = [Image.new("RGB", (48, 48), c) for c in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (src / "anim.gif").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (90, 90, 90)).save(buf, "JPEG", xmp=xmp_packet("trainedAlgorithmicMedia"))
    (src / "declared.jpg").write_bytes(buf.getvalue())
    return src


def _facts(idx) -> dict[str, tuple]:
    rows = audit.open(idx).items().select("uri", *FACTS).iter_rows()
    return {uri.rsplit("/", 1)[-1]: tuple(rest) for uri, *rest in rows}


def _as_before_the_formats_change(idx, names) -> None:
    with sqlite3.connect(idx / "catalog.sqlite") as conn:
        ids = [conn.execute("SELECT item_id FROM locations WHERE uri LIKE ?", (f"%/{n}",)).fetchone()[0] for n in names]
        conn.executemany(
            f"UPDATE items SET {', '.join(f'{c} = NULL' for c in FACTS)} WHERE item_id = ?", [(i,) for i in ids]
        )


def test_reread_restores_the_facts_of_old_rows_only(tmp_path):
    src, idx = _source(tmp_path), tmp_path / "idx"
    audit.crawl([src], idx, workers=0)
    fresh = _facts(idx)
    assert fresh["anim.gif"][1] and json.loads(fresh["declared.jpg"][0])["ai_generated"]
    assert {f[2] for f in fresh.values()} == {READER_VERSION}
    _as_before_the_formats_change(idx, ["anim.gif", "declared.jpg", "still.png"])
    a = audit.open(idx)
    seq = dict(a.items().select("uri", "seq").iter_rows())
    assert a.crawl([src], workers=0).read == 0  # unchanged files: an ordinary crawl keeps the old rows
    assert _facts(idx)["anim.gif"] == (None, None, None)
    s = a.crawl([src], workers=0, reread="stale")
    assert (s.read, s.reread, s.unchanged, s.changed, s.new_items) == (3, 3, 1, 0, 0)
    assert _facts(idx) == fresh
    # the facts that came back make the rows new to the flag stage; the untouched row is not
    raised = {uri.rsplit("/", 1)[-1] for uri, n in a.items().select("uri", "seq").iter_rows() if n > seq[uri]}
    assert raised == {"anim.gif", "declared.jpg"}  # still.png: no provenance, no frames, nothing changed
    assert a.crawl([src], workers=0, reread="stale").read == 0  # nothing stale is left
    s = a.crawl([src], workers=0, reread="all")
    assert (s.read, s.reread, s.unchanged) == (4, 4, 0) and _facts(idx) == fresh


def test_cli_reread(tmp_path):
    src, idx = _source(tmp_path), tmp_path / "idx"
    audit.crawl([src], idx, workers=0)
    _as_before_the_formats_change(idx, ["anim.gif"])
    res = audit_cli("crawl", src, "--index", idx, "--workers", "0", "--reread", "--json")
    out = json.loads(res.stdout)
    assert (out["read"], out["reread"], out["unchanged"]) == (1, 1, 3)
    assert "1 read (1 re-read)" in res.stderr
    assert _facts(idx)["anim.gif"][1]
