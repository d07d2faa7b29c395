"""Provenance: C2PA manifests (signed here with a throwaway CA through the real SDK) and
IPTC DigitalSourceType in XMP, read by the crawler into ``items.provenance``, fired as
``provenance:*`` signals by the flag stage and shown in reports. A corrupt store is recorded,
never a crash."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest
from PIL import Image

import audit
from audit.provenance import PROVENANCE_SIGNALS, read_provenance, signals_of
from audit.provenance.xmp import xmp_source_types
from tests.c2pa_fixtures import ca_pem, sign, xmp_packet

pytest.importorskip("c2pa")


def _image(fmt: str, colour=(200, 30, 30), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, fmt, **save)
    return buf.getvalue()


def _tamper_pixels(png: bytes) -> bytes:
    """A text chunk slipped in before IEND after signing: the file still decodes, but the
    bytes the manifest's data hash covers changed (an edit after signing)."""
    import struct
    import zlib

    body = b"Comment\x00edited after signing"
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    at = png.rfind(b"IEND") - 4
    return png[:at] + chunk + png[at:]


def _break_store(png: bytes) -> bytes:
    """The JUMBF boxes of the C2PA store (PNG caBX chunk) overwritten part-way."""
    at = png.find(b"caBX") + 200
    return png[:at] + b"\x00" * 60 + png[at + 60 :]


@pytest.fixture(scope="module")
def signed_png() -> bytes:
    return sign(_image("PNG"), "image/png")


def test_signed_manifest_is_read_with_generator_actions_signer_and_validation(signed_png):
    rec = read_provenance(signed_png)
    c = rec["c2pa"]
    assert c["claim_generator"] == "ToyGen 1.0"
    assert c["actions"][0]["action"] == "c2pa.created" and c["actions"][0]["softwareAgent"] == "ToyGen"
    assert c["digital_source_types"] == ["trainedAlgorithmicMedia"]
    assert c["signer"]["common_name"] == "Toy Generator Signer" and c["signer"]["issuer"] == "Toy Test Org"
    assert (c["validation_state"], c["signature_valid"], c["trusted"], c["invalid"]) == ("Valid", True, False, False)
    assert "signingCredential.untrusted" in c["failures"]
    assert rec["ai_generated"] is True
    assert [n for n, _ in signals_of(rec)] == ["provenance:c2pa", "provenance:ai-generated"]


def test_trust_anchor_makes_the_signer_trusted(signed_png, tmp_path, monkeypatch):
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(ca_pem())
    monkeypatch.setenv("AUDIT_C2PA_TRUST_ANCHORS", str(anchors))
    c = read_provenance(signed_png)["c2pa"]
    assert (c["validation_state"], c["trusted"]) == ("Trusted", True)
    monkeypatch.setenv("AUDIT_C2PA_TRUST_ANCHORS", str(tmp_path / "missing.pem"))
    c = read_provenance(signed_png)["c2pa"]  # a setup problem: recorded, not called invalid
    assert c["checked"] is False and c["invalid"] is False and "AUDIT_C2PA_TRUST_ANCHORS" in c["error"]


def test_tampered_pixels_and_corrupt_store_are_invalid_not_a_crash(signed_png):
    tampered = read_provenance(_tamper_pixels(signed_png))["c2pa"]
    assert tampered["validation_state"] == "Invalid" and tampered["invalid"] is True
    assert "assertion.dataHash.mismatch" in tampered["failures"]
    broken = read_provenance(_break_store(signed_png))
    assert broken["c2pa"]["invalid"] is True and broken["c2pa"]["error"].startswith("C2PA manifest store unreadable")
    assert "\n" not in broken["c2pa"]["error"]
    assert [n for n, _ in signals_of(broken)] == ["provenance:c2pa", "provenance:c2pa-invalid"]
    # the label alone, with no store behind it, is no manifest
    assert read_provenance(_image("PNG") + b"c2pa") is None


def test_camera_capture_manifest_is_not_ai_generated():
    rec = read_provenance(sign(_image("JPEG"), "image/jpeg", source_type="digitalCapture"))
    assert rec["c2pa"]["digital_source_types"] == ["digitalCapture"] and rec["ai_generated"] is False
    assert "provenance:ai-generated" not in [n for n, _ in signals_of(rec)]


@pytest.mark.parametrize("attribute", [False, True])
def test_xmp_digital_source_type_in_jpeg_and_png(attribute):
    packet = xmp_packet("compositeWithTrainedAlgorithmicMedia", attribute=attribute)
    jpeg = _image("JPEG", xmp=packet)
    assert xmp_source_types(jpeg) == ["compositeWithTrainedAlgorithmicMedia"]
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet.decode(), zip=True)  # compressed: inflated to be read
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=info)
    assert b"DigitalSourceType" not in buf.getvalue()
    rec = read_provenance(buf.getvalue())
    assert rec["xmp"]["digital_source_types"] == ["compositeWithTrainedAlgorithmicMedia"] and rec["ai_generated"]
    assert read_provenance(_image("PNG")) is None


def test_crawl_flag_and_report_carry_provenance(tmp_path, signed_png):
    src = tmp_path / "src"
    src.mkdir()
    (src / "signed.png").write_bytes(signed_png)
    (src / "tampered.png").write_bytes(_tamper_pixels(signed_png))
    (src / "broken.png").write_bytes(_break_store(signed_png))
    (src / "xmp.jpg").write_bytes(_image("JPEG", colour=(30, 30, 200), xmp=xmp_packet("trainedAlgorithmicMedia")))
    (src / "plain.png").write_bytes(_image("PNG", colour=(30, 200, 30)))
    policy = tmp_path / "policy.toml"
    policy.write_text("""
[policy]
name = "provenance"
[[category]]
id = "ai-declared"
severity = "low"
[[category]]
id = "provenance-broken"
severity = "medium"
[[flag]]
category = "ai-declared"
all = ["provenance:ai-generated"]
[[flag]]
category = "provenance-broken"
all = ["provenance:c2pa-invalid"]
""")
    index = tmp_path / "idx"
    summary = audit.crawl([str(src)], index, workers=0)
    assert summary.errors == 0  # a broken manifest costs provenance, never the item
    with audit.open(index) as a:
        items = {r["uri"].rsplit("/", 1)[1]: r for r in a.items().iter_rows(named=True)}
        assert items["plain.png"]["provenance"] is None
        assert json.loads(items["broken.png"]["provenance"])["c2pa"]["invalid"] is True
        a.flag(str(policy))
        found = a.findings()
        cats: dict[str, set] = {}
        for row in found.iter_rows(named=True):
            cats.setdefault(row["uri"].rsplit("/", 1)[1], set()).add(row["category"])
        assert cats == {
            "signed.png": {"ai-declared"},
            "tampered.png": {"ai-declared", "provenance-broken"},
            "broken.png": {"provenance-broken"},
            "xmp.jpg": {"ai-declared"},
        }
        a.report(tmp_path / "rep")
    records = [json.loads(line) for line in (tmp_path / "rep" / "findings.jsonl").read_text().splitlines()]
    signed = next(r for r in records if r["uri"].endswith("signed.png"))
    assert signed["provenance"]["c2pa"]["signer"]["common_name"] == "Toy Generator Signer"
    assert any(s["name"] == "provenance:ai-generated" and s["kind"] == "provenance" for s in signed["signals"])
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "C2PA: ToyGen 1.0, signed by Toy Generator Signer (Valid)" in html


def test_old_catalog_gains_the_column_and_a_changed_record_reflags(tmp_path, signed_png):
    """A catalog made before the column: opening it adds ``provenance`` (migration 1);
    a re-read file whose provenance changed moves up the change sequence (the flag stage
    sees it again). Unchanged files are not re-read: their provenance stays NULL."""
    import os

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(signed_png)
    index = tmp_path / "idx"
    audit.crawl([str(src)], index, workers=0)
    db = index / "catalog.sqlite"
    con = sqlite3.connect(db)
    seq_before = con.execute("SELECT seq FROM items").fetchone()[0]
    con.execute("ALTER TABLE items DROP COLUMN provenance")
    con.execute("PRAGMA user_version = 0")  # older releases left catalogs unversioned
    con.commit()
    con.close()
    st = os.stat(src / "a.png")
    os.utime(src / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, new mtime: re-read
    audit.crawl([str(src)], index, workers=0)
    con = sqlite3.connect(db)
    prov, seq = con.execute("SELECT provenance, seq FROM items").fetchone()
    con.close()
    assert json.loads(prov)["ai_generated"] is True and seq > seq_before


def test_policy_knows_the_provenance_signals(tmp_path):
    from audit.errors import InputError
    from audit.policy import load_policy
    from audit.policy.schema import BUILTIN_PROVENANCE_SIGNALS

    assert set(BUILTIN_PROVENANCE_SIGNALS) == set(PROVENANCE_SIGNALS)
    bad = tmp_path / "p.toml"
    bad.write_text(
        '[policy]\nname = "x"\n[[category]]\nid = "c"\nseverity = "low"\n'
        '[[flag]]\ncategory = "c"\nall = ["provenance:ai-made"]\n'
    )
    with pytest.raises(InputError, match="provenance:ai-made.*provenance signal.*did you mean"):
        load_policy(bad)
