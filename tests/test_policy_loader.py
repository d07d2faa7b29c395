"""Policy loader: the default and toy policies load; every error is one located line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from audit.errors import ExitCode, InputError
from audit.policy import load_policy, parse_policy
from audit.policy.loader import default_policy_path

DATA = Path(__file__).resolve().parents[1] / "samples" / "policy"
TOY = DATA / "toy.toml"

BASE = """\
[policy]
name = "t"
version = "1"

[[category]]
id = "shapes"
severity = "high"

[[concept]]
id = "red-triangle"
texts = ["a red triangle"]

[[rule]]
id = "triangle-words"
words = ["triangle"]

[[flag]]
category = "shapes"
all = ["concept:red-triangle/image", "rule:triangle-words"]
"""


def write(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_policy(path)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == ExitCode.USAGE
    assert message.startswith(str(path) + ":")
    return message[len(str(path)) :]  # ":LINE: ..."


# ------------------------------------------------------------------ happy paths


def test_default_policy_loads_and_is_clinical():
    policy = load_policy(None)
    assert policy.path == default_policy_path().resolve()
    ids = {c.id for c in policy.categories}
    assert {
        "sexual-minors",
        "sexual-real-person",
        "sexual",
        "graphic-violence",
        "self-harm",
        "hate-symbols",
        "known-match",
        "prompt-evasion",
    } <= ids
    assert policy.category("sexual-minors").severity == "critical"
    assert policy.category("sexual-minors").no_view
    assert policy.category("sexual-real-person").no_view
    assert policy.category("known-match").no_view
    assert policy.category("sexual").severity == "medium"
    # thresholds are calibrated per model: none is set in the default policy
    assert all(c.image_threshold is None and c.prompt_threshold is None for c in policy.concepts)
    assert policy.concept("minor").special_care
    assert policy.name_lists[0].names == ()
    assert len(policy.content_hash) == 64
    assert any(rule.fields == ("negative_prompt",) for rule in policy.rules)


def test_toy_policy_loads(tmp_path):
    policy = load_policy(TOY)
    assert policy.name == "toy" and policy.version == "1"
    category = policy.category("red-triangles")
    assert category.severity == "critical" and category.no_view
    concept = policy.concept("red-triangle")
    assert concept.texts == ("a red triangle",)
    assert "a photo of a red triangle" in concept.prompts()
    assert concept.image_threshold is None
    (rule,) = [r for r in policy.rules if r.id == "triangle-words"]
    assert rule.allow == ("love triangle", "triangle inequality")
    assert [h.id for h in policy.hashlists] == ["toy-known"]
    bank = policy.hashlists[0].bank
    assert bank is not None and bank.pdq.shape == (2, 32) and len(bank.md5) == 1
    assert policy.hashlists[0].pdq_max_distance == 31
    assert policy.hashlists[0].pdq_min_quality == 50
    assert [h.id for h in policy.negative_banks] == ["toy-false-positives"]
    assert policy.negative_banks[0].negative
    assert policy.negative_concepts[0].suppresses == ("red-triangle",)
    assert "Jane Placeholder" in policy.name_lists[0].names
    # a hash list's category becomes an implicit flag on its signal
    implicit = [f for f in policy.flags if f.implicit]
    assert implicit and implicit[0].any == ("hash:toy-known",)
    assert implicit[0].category == "known-match"


def test_content_hash_tracks_text_and_referenced_files(tmp_path):
    (tmp_path / "banks").mkdir()
    (tmp_path / "banks" / "b.csv").write_text("hash_type,hash,label\nmd5," + "a" * 32 + ",x\n")
    text = BASE + '\n[[hashlist]]\npath = "banks/b.csv"\ncategory = "shapes"\n'
    first = load_policy(write(tmp_path, text))
    crlf = parse_policy("\ufeff" + text.replace("\n", "\r\n"), str(tmp_path / "policy.toml"))
    assert crlf.content_hash == first.content_hash  # canonicalised: BOM and line endings
    (tmp_path / "banks" / "b.csv").write_text("hash_type,hash,label\nmd5," + "b" * 32 + ",x\n")
    second = load_policy(tmp_path / "policy.toml")
    assert second.text_hash == first.text_hash
    assert second.content_hash != first.content_hash
    third = load_policy(write(tmp_path, text + "\n# a comment\n"))
    assert third.content_hash != first.content_hash


def test_defaults_critical_is_no_view_unless_said(tmp_path):
    policy = load_policy(write(tmp_path, BASE.replace('severity = "high"', 'severity = "critical"')))
    assert policy.category("shapes").no_view
    assert policy.flags[0].id == "shapes#1"


# ------------------------------------------------------------------ errors


def test_threshold_out_of_range(tmp_path):
    text = BASE.replace('texts = ["a red triangle"]', 'texts = ["a red triangle"]\nimage_threshold = 1.5')
    assert error_of(tmp_path, text) == (
        ':12: concept "red-triangle": image_threshold must be a number between -1 and 1'
    )


def test_threshold_wrong_type(tmp_path):
    text = BASE.replace('texts = ["a red triangle"]', 'texts = ["a red triangle"]\nprompt_threshold = "high"')
    assert "prompt_threshold must be a number" in error_of(tmp_path, text)


def test_toml_syntax_error_has_line(tmp_path):
    text = BASE.replace('version = "1"', 'version = "1')
    message = error_of(tmp_path, text)
    assert message.startswith(":3: TOML syntax error:")


def test_unknown_key_named_with_suggestion(tmp_path):
    text = BASE.replace('texts = ["a red triangle"]', 'texts = ["a red triangle"]\nimage_treshold = 0.2')
    assert error_of(tmp_path, text) == (
        ':12: concept "red-triangle": unknown key "image_treshold" (did you mean "image_threshold"?)'
    )


def test_unknown_table(tmp_path):
    message = error_of(tmp_path, BASE + '\n[[concepts]]\nid = "x"\n')
    assert message.startswith(':21: unknown table or key "concepts"')
    assert 'did you mean "concept"' in message


def test_single_brackets_for_array_table(tmp_path):
    text = BASE.replace("[[category]]", "[category]")
    message = error_of(tmp_path, text)
    assert message == ":5: category: [category] must be an array of tables: write [[category]]"


def test_duplicate_ids(tmp_path):
    text = BASE + '\n[[concept]]\nid = "red-triangle"\ntexts = ["x"]\n'
    assert error_of(tmp_path, text) == ':22: concept "red-triangle": duplicate concept id "red-triangle"'


def test_flag_unknown_signal(tmp_path):
    text = BASE.replace('"rule:triangle-words"]', '"rule:triangle-word"]')
    assert error_of(tmp_path, text) == (
        ':19: flag #1: all: "rule:triangle-word" names no rule of this policy (did you mean "rule:triangle-words"?)'
    )


@pytest.mark.parametrize(
    "signal, fragment",
    [
        ("names:people", "names no name list"),
        ("hash:bank", "names no hash list"),
        ("concept:blue-circle", "names no concept"),
        ("prompt:short", "names no built-in prompt signal"),
        ("colour:red", "is not a signal name"),
        ("triangle", "is not a signal name"),
    ],
)
def test_flag_signal_kinds_checked(tmp_path, signal, fragment):
    text = BASE.replace('"rule:triangle-words"]', f'"{signal}"]')
    assert fragment in error_of(tmp_path, text)


def test_flag_alternatives_and_wildcards_validate(tmp_path):
    ok = BASE.replace('"rule:triangle-words"]', '"rule:triangle-words|hash:*"]')
    load_policy(write(tmp_path, ok))
    bad = BASE.replace('"rule:triangle-words"]', '"rule:triangle-words|rule:nope"]')
    assert '"rule:nope" names no rule' in error_of(tmp_path, bad)


def test_flag_unknown_category_and_none_only(tmp_path):
    text = BASE.replace('category = "shapes"\nall', 'category = "shape"\nall')
    assert error_of(tmp_path, text) == ':18: flag #1: category "shape" is not defined'
    text = BASE.replace("all = [", "none = [")
    assert "a flag needs all or any" in error_of(tmp_path, text)


def test_bad_severity(tmp_path):
    text = BASE.replace('severity = "high"', 'severity = "urgent"')
    assert error_of(tmp_path, text) == (
        ':7: category "shapes": severity "urgent" must be one of critical, high, medium, low'
    )


def test_invalid_regex_points_at_pattern_line(tmp_path):
    text = BASE.replace('words = ["triangle"]', 'words = ["triangle"]\npatterns = [\n  "ok",\n  "tri(angle",\n]')
    message = error_of(tmp_path, text)
    assert message.startswith(':18: rule "triangle-words": patterns[1]: invalid regular expression')


def test_rule_fields_checked(tmp_path):
    text = BASE.replace('words = ["triangle"]', 'words = ["triangle"]\nfields = ["caption"]')
    assert error_of(tmp_path, text) == (
        ':16: rule "triangle-words": fields: "caption" is not one of prompt, negative_prompt, resources, model'
    )


def test_rule_needs_something(tmp_path):
    text = BASE.replace('words = ["triangle"]', 'fields = ["prompt"]')
    assert "a rule needs patterns, words or ages_below" in error_of(tmp_path, text)


def test_missing_hashlist_file(tmp_path):
    text = BASE + '\n[[hashlist]]\npath = "banks/none.csv"\ncategory = "shapes"\n'
    assert error_of(tmp_path, text) == ":22: hashlist #1: path: file not found: banks/none.csv"


def test_hashlist_category_required_and_known(tmp_path):
    (tmp_path / "b.csv").write_text("md5," + "a" * 32 + ",x\n")
    text = BASE + '\n[[hashlist]]\npath = "b.csv"\n'
    assert "category is required" in error_of(tmp_path, text)
    text = BASE + '\n[[hashlist]]\npath = "b.csv"\ncategory = "nope"\n'
    assert error_of(tmp_path, text) == ':23: hashlist #1: category "nope" is not defined'


def test_bad_hash_row_names_csv_line(tmp_path):
    (tmp_path / "b.csv").write_text("hash_type,hash,label\npdq," + "0" * 64 + ",ok\n\npdq,zz,bad\n")
    path = write(tmp_path, BASE + '\n[[hashlist]]\npath = "b.csv"\ncategory = "shapes"\n')
    with pytest.raises(InputError) as info:
        load_policy(path)
    assert str(info.value) == "b.csv:4: hash: pdq must be 64 hex digits, got 'zz'"


def test_exemplar_glob_matching_nothing(tmp_path):
    text = BASE.replace('texts = ["a red triangle"]', 'texts = ["a red triangle"]\nexemplars = ["exemplars/*.png"]')
    assert error_of(tmp_path, text) == (':12: concept "red-triangle": exemplars: "exemplars/*.png" matches no file')
    (tmp_path / "exemplars").mkdir()
    (tmp_path / "exemplars" / "a.png").write_bytes(b"png")
    policy = load_policy(tmp_path / "policy.toml")
    assert policy.concept("red-triangle").exemplar_paths == (tmp_path / "exemplars" / "a.png",)


def test_template_without_placeholder(tmp_path):
    text = BASE.replace('texts = ["a red triangle"]', 'texts = ["a red triangle"]\ntemplates = ["a photo of it"]')
    assert error_of(tmp_path, text) == (
        ':12: concept "red-triangle": templates: "a photo of it" must contain "{}" once and no other braces'
    )


def test_negative_concept_suppresses_unknown(tmp_path):
    text = BASE + '\n[[negative_concept]]\nid = "n"\ntexts = ["x"]\nsuppresses = ["blue"]\n'
    assert error_of(tmp_path, text) == ':24: negative_concept "n": suppresses: concept "blue" is not defined'


def test_bad_id_and_missing_id(tmp_path):
    text = BASE.replace('id = "red-triangle"', 'id = "red triangle"')
    assert 'id "red triangle" must be letters' in error_of(tmp_path, text)
    text = BASE.replace('id = "red-triangle"\n', "")
    assert error_of(tmp_path, text) == ":9: concept #1: id is required"


def test_names_file_missing(tmp_path):
    text = BASE + '\n[[names]]\nid = "people"\npath = "people.txt"\n'
    assert error_of(tmp_path, text) == ':23: names "people": path: file not found: people.txt'


def test_load_policy_missing_file(tmp_path):
    with pytest.raises(InputError, match="policy file not found"):
        load_policy(tmp_path / "absent.toml")


def test_not_utf8(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_bytes(BASE.encode() + b"\n# \xff\n")
    with pytest.raises(InputError, match=r"policy.toml:21: policy file is not UTF-8"):
        load_policy(path)
