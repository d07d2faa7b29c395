"""notebooks/investigate.ipynb runs top to bottom on the sample archive, and is committed clean."""

from __future__ import annotations

import json

import nbformat
import polars as pl
import pytest
from nbclient import NotebookClient

import audit
from tests.paths import REPO

NOTEBOOK = REPO / "notebooks" / "investigate.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_NOTEBOOK_INDEX", str(tmp_path / "idx"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    html = "".join(o.get("data", {}).get("text/html", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # the flagged cluster is red triangles, a no_view category: its grid shows no image at all,
    # not even of the members that fired nothing themselves (red stars: near-alike to it)
    assert "withheld: red-triangles is no_view" in html and "<img" not in html
    # the plots: SVG of points and bars, never an embedded picture
    svgs = [
        o["data"]["image/svg+xml"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/svg+xml" in o.get("data", {})
    ]
    assert len(svgs) == 2
    embedding_map, histograms = svgs
    assert "<image" not in embedding_map + histograms and "<img" not in embedding_map + histograms
    assert embedding_map.count("<circle") > 100 and "red-triangles" in embedding_map
    assert "red-triangle · image" in histograms and "threshold 0." in histograms
    a = audit.open(tmp_path / "idx")
    decisions = a.decisions()
    assert set(decisions["decision"]) >= {"confirm"}
    kinds = a.findings().explode("signals").select(pl.col("signals").struct.field("kind"))["kind"]
    assert (kinds == "seed_neighbor").any()


def test_show_escapes_text_and_blurs(tmp_path):
    from tests.toy_world import write_generation

    img = write_generation(tmp_path / "a" / "x.png", "blue", "square", seed=3)
    from PIL import PngImagePlugin, Image

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "<script>window.__pwned=1</script>\nSteps: 1, Seed: 1")
    Image.open(img).save(img, pnginfo=info)
    a = audit.open(tmp_path / "idx", create=True)
    a.crawl([tmp_path / "a"], workers=0)
    grid = a.show(a.items())
    html = grid._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("<img") == 1 and "thumbnails blurred" in html
