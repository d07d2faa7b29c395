"""index.html escapes by default: a hostile string in every field that reaches the page comes
out as text, and the check that proves it catches a page rendered with autoescape off.

The page is built from a ``ReportData`` whose every displayed field holds its own marker
followed by markup that would break out of text, attributes and the note ``<textarea>``.
An HTML parser then reads the page back: the markers must all be there (the field reached
the page) and the page must hold only its own elements and attributes (nothing broke out).
"""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from jinja2 import nodes

from audit.report import html as report_html
from audit.report import templating
from audit.report.data import FindingRow, Item, ReportData, Thumb

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "audit" / "report" / "templates"
BREAKOUT = "\"'><script>alert(1)</script><img src=x onerror=alert(2)></textarea><b>bold</b>&amp;"


def hostile(field: str) -> str:
    """The field's marker first: what survives a field's truncation ([:16], [:200]) is the marker."""
    return f"~{field}~{BREAKOUT}"


# Every field of the archive, the policy, the flag run and the report's metadata that the page shows.
FIELDS = """
index_name index_dir note prev_started category description policy_name policy_version policy_hash
model_name model_pretrained model_checkpoint flag_run_id flag_run_at learned_key generated_at user
host report_id cluster_id cluster_kind cluster_size cluster_term unit_flagged unit_min_flagged
unit_eligible unit_rest fired_item_id fired_name fired_score fired_threshold finding_id item_id uri
status severity signal_kind signal_name signal_score signal_threshold signal_margin match_text
match_field detail_key detail_value decision decision_by decision_at decision_note prompt
negative_prompt generator model model_hash seed format width height md5 pdq resource_kind resource_name
resource_weight resource_hash resource_text location_uri missing_since read_error other_item_id
other_category other_uri other_prompt other_signal_detail
""".split()


def hostile_data() -> tuple[ReportData, dict]:
    h = {f: hostile(f) for f in FIELDS}
    cat, other_cat, cid = h["category"], h["other_category"], h["cluster_id"]
    signals = [
        {
            "kind": h["signal_kind"],
            "name": h["signal_name"],
            "score": h["signal_score"],
            "threshold": h["signal_threshold"],
            "margin": h["signal_margin"],
            "detail": {
                "matches": [{"field": h["match_field"], "text": h["match_text"], "span": [0, 4]}],
                h["detail_key"]: h["detail_value"],
            },
        },
        # a rule's span over the prompt: the highlighted part and the rest are both text
        {"kind": "prompt_rule", "name": "rule", "detail": {"matches": [{"field": "prompt", "span": [0, 30]}]}},
    ]
    item = Item(
        item_id=h["item_id"],
        facts={
            "prompt": h["prompt"],
            "negative_prompt": h["negative_prompt"],
            "generator": h["generator"],
            "model": h["model"],
            "model_hash": h["model_hash"],
            "seed": h["seed"],
            "format": h["format"],
            "width": h["width"],
            "height": h["height"],
            "md5": h["md5"],
            "pdq": h["pdq"],
            "size": 1234,
        },
        resources=[
            {"kind": h["resource_kind"], "name": h["resource_name"], "weight": h["resource_weight"]},
            {"kind": "lora", "hash": h["resource_hash"]},  # label and extra are cut at 120 characters each
            h["resource_text"],
        ],
        locations=[
            {"uri": h["location_uri"], "size": 10, "mtime_ns": 1, "present": False, "missing_since": h["missing_since"]}
        ],
        categories=[cat],
        no_view=False,
        checked=True,
        present=True,
        verified=True,
        read_error=h["read_error"],
        thumb=Thumb(cover=b"cover", reveal=b"reveal", width=10, height=10),
    )
    # a no_view item with a thumbnail at hand: the page must still show no image of it
    withheld = Item(
        item_id=h["other_item_id"],
        facts={"prompt": h["other_prompt"]},
        resources=[],
        locations=[],
        categories=[other_cat],
        no_view=True,
        checked=True,
        present=True,
        verified=True,
        thumb=Thumb(cover=b"withheld-cover", reveal=b"withheld-reveal", width=10, height=10),
    )
    finding = FindingRow(
        finding_id=h["finding_id"],
        item_id=item.item_id,
        uri=h["uri"],
        category=cat,
        severity="high",
        status=h["status"],
        cluster_id=cid,
        signals=signals,
        policy_hash="p",
        first_flagged="t",
        last_flagged="t",
        new_since_last_report=True,
        decision={
            "decision": h["decision"],
            "by": h["decision_by"],
            "at": h["decision_at"],
            "note": h["decision_note"],
        },
    )
    withheld_finding = FindingRow(
        finding_id="f2",
        item_id=withheld.item_id,
        uri=h["other_uri"],
        category=other_cat,
        severity=h["severity"],
        status="new",
        cluster_id=None,
        signals=[{"kind": "concept", "detail": h["other_signal_detail"]}],
        policy_hash="p",
        first_flagged="t",
        last_flagged="t",
        new_since_last_report=False,
    )
    cluster = {
        "cluster_id": cid,
        "kind": h["cluster_kind"],
        "size": h["cluster_size"],
        "flagged_share": 0.5,
        "top_terms": [[h["cluster_term"], 2]],
        "categories": [cat],
        "review": {
            cat: {
                "fired": [
                    {
                        "item_id": h["fired_item_id"],
                        "name": h["fired_name"],
                        "score": h["fired_score"],
                        "threshold": h["fired_threshold"],
                    }
                ],
                "flagged": h["unit_flagged"],
                "min_flagged": h["unit_min_flagged"],
                "min_fraction": 0.5,
                "eligible": h["unit_eligible"],
                "rest": h["unit_rest"],
                "candidates": [],
            }
        },
    }
    data = ReportData(
        index_name=h["index_name"],
        index_dir=h["index_dir"],
        findings=[finding, withheld_finding],
        items={item.item_id: item, withheld.item_id: withheld},
        clusters=[cluster],
        categories={
            cat: {"severity": "high", "no_view": False, "description": h["description"], "in_policy": True},
            other_cat: {"severity": h["severity"], "no_view": True, "description": "", "in_policy": True},
        },
        policy={"name": h["policy_name"], "version": h["policy_version"], "content_hash": h["policy_hash"]},
        model={
            "name": h["model_name"],
            "pretrained": h["model_pretrained"],
            "checkpoint_sha256": h["model_checkpoint"],
        },
        flag_run={
            "run_id": h["flag_run_id"],
            "at": h["flag_run_at"],
            "thresholds": {"learned:" + h["learned_key"]: {"decisions": {"confirmed": 1}}},
        },
        catalog_version=1,
        previous_report={"started": h["prev_started"]},
        notes=[h["note"]],
    )
    meta = {k: h[k] for k in ("generated_at", "user", "host", "report_id")}
    return data, meta


class Page(HTMLParser):
    """The page as a browser's parser reads it: elements, attributes, and all decoded text."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.bold_from_data = False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]

    def handle_data(self, data):
        self.text.append(data)
        self.bold_from_data |= bool(self.tags) and self.tags[-1] == "b" and data == "bold"

    def everything(self) -> str:
        return "\n".join(self.text + [v for _, v in self.attrs])


def breakouts(page: str, scripts: int = 1) -> list[str]:
    """What markup from the data made it into the page as markup, not text (``scripts``: the
    page's own script elements)."""
    p = Page(page)
    found = []
    if p.tags.count("script") != scripts:
        found.append(f"{p.tags.count('script')} <script> elements")
    if p.bold_from_data:
        found.append("a <b> from the data")
    if any(k.startswith("on") for k, _ in p.attrs):
        found.append("an event handler attribute")
    if any(k == "src" and v == "x" for k, v in p.attrs):
        found.append("an <img src=x>")
    if page.count("</textarea>") != p.tags.count("textarea"):
        found.append("a </textarea> from the data")
    return found


def _page(env) -> str:
    data, meta = hostile_data()
    return env.get_template(report_html.PAGE_TEMPLATE).render(**report_html.page_context(data, meta))


def test_a_hostile_string_in_every_field_comes_out_as_text():
    page = report_html.render(*hostile_data())
    assert breakouts(page) == []
    shown = Page(page).everything()
    missing = [f for f in FIELDS if f"~{f}~" not in shown and f"~{f.lower()}~" not in shown]
    assert missing == [], f"fields that never reached the page (the test would not see them escaped): {missing}"
    # the whole payload survives as text where a field is shown in full
    assert hostile("prompt") in shown and hostile("note") in shown and hostile("location_uri") in shown
    assert "<script>alert(1)" not in page and "<img src=x" not in page


def test_the_escaping_check_catches_a_page_rendered_without_autoescape():
    """The same page through the same templates with autoescape off: the check must fail."""
    found = breakouts(_page(templating.make_environment(autoescape=False)))
    assert {"a <b> from the data", "an <img src=x>", "an event handler attribute"} <= set(found)
    assert "a </textarea> from the data" in found and any(f.endswith("<script> elements") for f in found)
    assert breakouts(_page(templating.environment())) == []


def test_every_template_is_rendered_with_autoescape_and_none_turns_it_off():
    env = templating.environment()
    names = env.list_templates()
    assert sorted(names) == sorted(p.name for p in TEMPLATES.glob("*.html.j2")) and names
    assert all(env.autoescape is True or env.autoescape(n) for n in names)
    for name in names:
        tree = env.parse(env.loader.get_source(env, name)[0])
        assert not [f.name for f in tree.find_all(nodes.Filter) if f.name in ("safe", "forceescape")], name
        assert not list(tree.find_all((nodes.EvalContextModifier, nodes.MarkSafe, nodes.MarkSafeIfAutoescape))), (
            f"{name} switches autoescape, or marks a value safe"
        )


def test_no_view_item_has_no_image_even_with_a_thumbnail_at_hand():
    page = report_html.render(*hostile_data())
    card = page.split('data-finding-id="f2"', 1)[1].split("</article>", 1)[0]
    assert "<img" not in card and "data-reveal" not in card and "data:" not in card
    for raw in (b"withheld-cover", b"withheld-reveal"):  # neither version anywhere on the page
        assert report_html._data_uri("image/jpeg", raw).split(",")[1] not in page
    assert page.count("<img") == 1  # the other item's blurred cover


def test_control_characters_are_shown_not_hidden():
    data, meta = hostile_data()
    data.notes = ["before\x1b[2Jafter\x00"]
    assert "before\ufffd[2Jafter\ufffd" in report_html.render(data, meta)


def test_jinja2_loads_with_the_first_page_not_with_the_package():
    code = (
        "import sys, audit, audit.cli.app, audit.report\n"
        "from audit.cli.app import _register_commands; _register_commands()\n"
        "print(sorted(m for m in ('jinja2', 'markupsafe') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("field", ["withheld", "caption", "prompt", "item_id"])
def test_notebook_grid_escapes_every_field(field):
    from audit.notebook import Cell, Grid

    values = {"item_id": "id", "uri": None, "prompt": "p", "caption": ["c"], "withheld": "w"}
    values[field] = [hostile(field)] if field == "caption" else hostile(field)
    page = Grid([Cell(**values)], blurred=True)._repr_html_()
    assert breakouts(page, scripts=0) == [], page
    assert f"~{field}~" in Page(page).everything()


def test_plot_labels_are_escaped():
    import polars as pl

    from audit.plots import score_histograms

    scores = pl.DataFrame(
        {
            "concept": [hostile("concept")] * 3,
            "image_score": [0.1, 0.2, 0.3],
            "image_threshold": [0.2] * 3,
            "prompt_score": [None, None, None],
            "prompt_threshold": [None, None, None],
        },
        schema_overrides={"prompt_score": pl.Float64, "prompt_threshold": pl.Float64},
    )
    svg = score_histograms(scores).svg
    assert breakouts(svg, scripts=0) == [] and "<img src=x" not in svg
    assert hostile("concept") in Page(svg).everything()


def test_templates_are_package_data():
    """A non-editable install ships the templates: each matches a pyproject package-data glob
    (setuptools resolves them like pathlib's glob; checked once with `pip wheel .`)."""
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["package-data"]["audit"]
    shipped = {p for g in globs for p in (REPO / "audit").glob(g)}
    templates = set(TEMPLATES.glob("*"))
    assert templates and templates <= shipped, sorted(p.name for p in templates - shipped)
