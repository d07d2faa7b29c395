"""Load and validate a policy file (TOML) into ``schema.Policy``.

Every problem is an ``InputError`` (exit code 2) with one line naming the file, the line and
the field::

    policy.toml:14: concept "minor": image_threshold must be a number between -1 and 1

``tomllib`` keeps no positions, so lines are found in the source text: the n-th ``[[concept]]``
header, then the key inside that table (and, for list items, the line holding the item).
Unknown keys are errors (a typo must never silently weaken a policy), as are duplicate ids,
flags naming signals the policy cannot produce, and files (hash lists, name files, exemplar
globs) that are missing or match nothing.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
import math
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from audit.errors import InputError
from audit.policy.schema import (
    BUILTIN_PROMPT_SIGNALS,
    BUILTIN_PROVENANCE_SIGNALS,
    DEFAULT_TEMPLATES,
    MAX_PROMPT_CHARS,
    RULE_ERROR_SIGNAL,
    SEVERITIES,
    SIGNAL_KINDS,
    TEXT_FIELDS,
    Category,
    FaceGallery,
    Concept,
    Flag,
    HashList,
    NameList,
    NegativeConcept,
    Policy,
    Rule,
)

__all__ = ["load_policy", "parse_policy", "default_policy_path"]

_ARRAYS = ("category", "concept", "rule", "names", "flag", "hashlist", "negative_bank", "negative_concept", "faces")
_KEYS: dict[str, tuple[str, ...]] = {
    "policy": (
        "name",
        "version",
        "description",
        "special_care_adjustment",
        "regex_timeout_ms",
        "max_prompt_chars",
        "timeout_is_finding",
    ),
    "category": ("id", "severity", "no_view", "description"),
    "concept": (
        "id",
        "texts",
        "templates",
        "exemplars",
        "image_threshold",
        "prompt_threshold",
        "special_care",
        "contrast",
        "description",
    ),
    "rule": ("id", "patterns", "words", "ages_below", "fields", "allow", "description"),
    "names": ("id", "names", "path", "fields", "description"),
    "flag": ("id", "category", "all", "any", "none", "min_any", "description"),
    "hashlist": (
        "id",
        "path",
        "category",
        "pdq_max_distance",
        "pdq_min_quality",
        "negative",
        "suppresses",
        "vpdq_query_match",
        "vpdq_compared_match",
        "description",
    ),
    "negative_bank": ("id", "path", "pdq_max_distance", "pdq_min_quality", "suppresses", "description"),
    "negative_concept": ("id", "texts", "threshold", "suppresses", "templates", "description"),
    "faces": ("id", "gallery", "max_distance", "min_face_px", "gate", "gate_threshold", "max_side", "description"),
}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")


def default_policy_path() -> Path:
    return Path(__file__).with_name("default.toml")


# ---------------------------------------------------------------------------- source lines


class _Source:
    """Finds the line of a table, a key, or a list item in the policy text."""

    def __init__(self, text: str):
        self.lines = text.split("\n")
        self.headers: list[tuple[int, str, bool]] = []  # (1-based line, name, is_array)
        in_multiline: str | None = None
        for number, line in enumerate(self.lines, 1):
            if in_multiline:
                if line.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    in_multiline = quote
                    break
            match = _HEADER.match(line)
            if match and not in_multiline:
                name = match.group(2).strip().strip('"').strip("'")
                self.headers.append((number, name, match.group(1) == "[["))

    def table(self, name: str, index: int | None) -> tuple[int, int]:
        """(first, last) lines of ``[name]`` or of the ``index``-th ``[[name]]``."""
        count = -1
        for position, (number, header, is_array) in enumerate(self.headers):
            if header != name or is_array != (index is not None):
                continue
            count += 1
            if index is None or count == index:
                end = self.headers[position + 1][0] - 1 if position + 1 < len(self.headers) else len(self.lines)
                return number, end
        # inline form (`concept = [{...}]`) or top-level keys: the assignment's line
        pattern = re.compile(rf"^\s*{re.escape(name)}\s*=")
        for number, line in enumerate(self.lines, 1):
            if pattern.match(line):
                return number, number
        return 1, len(self.lines)

    def key(self, name: str, index: int | None, key: str | None) -> int:
        first, last = self.table(name, index)
        if key is None:
            return first
        pattern = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
        for number in range(first, last + 1):
            if pattern.match(self.lines[number - 1]):
                return number
        return first

    def item(self, name: str, index: int | None, key: str, value: Any) -> int:
        line = self.key(name, index, key)
        if not isinstance(value, str):
            return line
        _, last = self.table(name, index)
        needles = {value, json.dumps(value)[1:-1]}
        for number in range(line, last + 1):
            text = self.lines[number - 1]
            if any(needle and needle in text for needle in needles):
                return number
        return line


class _Ctx:
    def __init__(self, source_name: str, text: str, base_dir: Path):
        self.source_name = source_name
        self.src = _Source(text)
        self.base_dir = base_dir
        self.files: dict[str, str] = {}  # referenced file (as shown) -> sha256

    def fail(
        self,
        table: str,
        index: int | None,
        key: str | None,
        message: str,
        *,
        label: str | None = None,
        item: Any = None,
    ) -> InputError:
        if item is not None and key is not None:
            line = self.src.item(table, index, key, item)
        else:
            line = self.src.key(table, index, key)
        where = label or (table if index is None else f"{table} #{index + 1}")
        return InputError(f"{self.source_name}:{line}: {where}: {message}")

    def note_file(self, path: Path) -> None:
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return
        try:
            shown = path.resolve().relative_to(self.base_dir.resolve()).as_posix()
        except ValueError:
            shown = path.resolve().as_posix()
        self.files[shown] = digest


# ---------------------------------------------------------------------------- value checks


class _Table:
    """One table of the policy, with typed getters that raise located errors."""

    def __init__(self, ctx: _Ctx, kind: str, index: int | None, data: Any):
        self.ctx, self.kind, self.index = ctx, kind, index
        if not isinstance(data, dict):
            raise ctx.fail(kind, index, None, f"[[{kind}]] must be a table")
        self.data = data
        ident = data.get("id")
        self.label = (
            f'{kind} "{ident}"'
            if isinstance(ident, str) and ident
            else (kind if index is None else f"{kind} #{index + 1}")
        )
        unknown = [key for key in data if key not in _KEYS[kind]]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, _KEYS[kind], n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else (" (known keys: " + ", ".join(_KEYS[kind]) + ")")
            raise self.fail(key, f'unknown key "{key}"{hint}')

    def fail(self, key: str | None, message: str, item: Any = None) -> InputError:
        return self.ctx.fail(self.kind, self.index, key, message, label=self.label, item=item)

    def has(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        if key not in self.data:
            if required:
                raise self.fail(None, f"{key} is required")
            return default  # type: ignore[return-value]
        value = self.data[key]
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail(key, f"{key} must be a non-empty string")
        return value

    def ident(self) -> str:
        value = self.string("id", required=True)
        if not _ID.match(value):
            raise self.fail(
                "id", f'id "{value}" must be letters, digits, ".", "_" or "-" (starting with a letter or digit)'
            )
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, list):
            raise self.fail(key, f"{key} must be a list of strings")
        for position, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.fail(
                    key, f"{key}[{position}] must be a non-empty string", item=item if isinstance(item, str) else None
                )
        return tuple(value)

    def number(self, key: str, low: float, high: float) -> float | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise self.fail(key, f"{key} must be a number between {low:g} and {high:g}")
        return float(value)

    def integer(self, key: str, low: int, high: int, default: int | None) -> int | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"{key} must be a whole number between {low} and {high}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            raise self.fail(key, f"{key} must be true or false")
        return value

    def fields(self) -> tuple[str, ...]:
        fields = self.strings("fields", ("prompt",))
        for item in fields:
            if item not in TEXT_FIELDS:
                raise self.fail("fields", f'fields: "{item}" is not one of ' + ", ".join(TEXT_FIELDS), item=item)
        if not fields:
            raise self.fail("fields", "fields must name one or more of " + ", ".join(TEXT_FIELDS))
        return tuple(dict.fromkeys(fields))

    def path(self, key: str, *, required: bool = True) -> Path | None:
        value = self.string(key, required=required)
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.ctx.base_dir / path
        if not path.is_file():
            raise self.fail(key, f"{key}: file not found: {value}")
        self.ctx.note_file(path)
        return path


# ---------------------------------------------------------------------------- sections


def _array(ctx: _Ctx, doc: dict, kind: str) -> list[_Table]:
    if kind not in doc:
        return []
    value = doc[kind]
    if not isinstance(value, list):
        raise ctx.fail(kind, None, None, f"[{kind}] must be an array of tables: write [[{kind}]]", label=kind)
    return [_Table(ctx, kind, index, item) for index, item in enumerate(value)]


def _unique(tables: list[_Table], ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for table, ident in zip(tables, ids):
        if ident in seen:
            raise table.fail("id", f'duplicate {what} id "{ident}"')
        seen.add(ident)


def _categories(ctx, doc) -> list[Category]:
    out = []
    tables = _array(ctx, doc, "category")
    for table in tables:
        ident = table.ident()
        severity = table.string("severity", required=True)
        if severity not in SEVERITIES:
            raise table.fail("severity", f'severity "{severity}" must be one of ' + ", ".join(SEVERITIES))
        # reviewer safety: critical categories are no_view unless the policy says otherwise
        no_view = table.boolean("no_view", severity == "critical")
        out.append(
            Category(
                ident, severity, no_view, table.string("description", ""), ctx.src.key("category", table.index, None)
            )
        )
    _unique(tables, [c.id for c in out], "category")
    if not out:
        raise ctx.fail("category", None, None, "a policy needs at least one [[category]]", label="policy")
    return out


def _templates(table: _Table) -> tuple[str, ...]:
    templates = table.strings("templates", DEFAULT_TEMPLATES)
    if not templates:
        raise table.fail("templates", "templates must not be empty (leave it out for defaults)")
    for template in templates:
        if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.replace("{}", "").count("}"):
            raise table.fail(
                "templates", f'templates: "{template}" must contain "{{}}" once and no other braces', item=template
            )
    return templates


def _concepts(ctx, doc) -> list[Concept]:
    out = []
    tables = _array(ctx, doc, "concept")
    for table in tables:
        ident = table.ident()
        texts = table.strings("texts")
        exemplars = table.strings("exemplars")
        if not texts and not exemplars:
            raise table.fail(
                "texts" if table.has("texts") else None, "texts must list at least one text (or give exemplars)"
            )
        paths: list[Path] = []
        for pattern in exemplars:
            full = pattern if Path(pattern).is_absolute() else str(ctx.base_dir / pattern)
            found = sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
            if not found:
                raise table.fail("exemplars", f'exemplars: "{pattern}" matches no file', item=pattern)
            for path in found:
                ctx.note_file(path)
            paths.extend(found)
        out.append(
            Concept(
                ident,
                texts,
                _templates(table),
                exemplars,
                tuple(dict.fromkeys(paths)),
                table.number("image_threshold", -1, 1),
                table.number("prompt_threshold", -1, 1),
                table.boolean("special_care", False),
                table.strings("contrast"),
                table.string("description", ""),
                ctx.src.key("concept", table.index, None),
            )
        )
    _unique(tables, [c.id for c in out], "concept")
    return out


def _rules(ctx, doc) -> list[Rule]:
    from audit.policy._engine import PatternSyntaxError, compile_pattern
    from audit.policy.rules import age_patterns

    out = []
    tables = _array(ctx, doc, "rule")
    for table in tables:
        ident = table.ident()
        patterns = table.strings("patterns")
        words = table.strings("words")
        ages_below = table.integer("ages_below", 2, 20, None)
        if not patterns and not words and ages_below is None:
            raise table.fail(None, "a rule needs patterns, words or ages_below")
        for position, pattern in enumerate(patterns):
            try:
                compile_pattern(pattern)
            except PatternSyntaxError as exc:
                raise table.fail(
                    "patterns", f"patterns[{position}]: invalid regular expression: {exc}", item=pattern
                ) from None
        if ages_below is not None:
            age_patterns(ages_below)
        out.append(
            Rule(
                ident,
                patterns,
                words,
                ages_below,
                table.fields(),
                table.strings("allow"),
                table.string("description", ""),
                ctx.src.key("rule", table.index, None),
            )
        )
    _unique(tables, [r.id for r in out], "rule")
    return out


def _name_lists(ctx, doc) -> list[NameList]:
    from audit.policy.names import read_names_file

    out = []
    tables = _array(ctx, doc, "names")
    for table in tables:
        ident = table.ident()
        names = list(table.strings("names"))
        path = table.path("path", required=False)
        if path is not None:
            try:
                names.extend(read_names_file(path))
            except InputError as exc:
                raise table.fail("path", f"path: {exc}") from None
        if not table.has("names") and path is None:
            raise table.fail(None, "a name list needs names (may be empty) or path")
        out.append(
            NameList(
                ident,
                tuple(dict.fromkeys(names)),
                path,
                table.fields(),
                table.string("description", ""),
                ctx.src.key("names", table.index, None),
            )
        )
    _unique(tables, [n.id for n in out], "name list")
    return out


def _hashlists(ctx, doc, categories: set[str]) -> tuple[list[HashList], list[HashList]]:
    from audit.policy.hashlists import load_hash_bank

    positive: list[HashList] = []
    negative: list[HashList] = []
    all_tables: list[_Table] = []
    pairs_ids: list[str] = []
    for kind in ("hashlist", "negative_bank"):
        for table in _array(ctx, doc, kind):
            all_tables.append(table)
            path = table.path("path")
            assert path is not None
            ident = table.ident() if table.has("id") else path.stem
            if not _ID.match(ident):
                raise table.fail("path", f'cannot derive an id from "{path.name}": give id')
            is_negative = kind == "negative_bank" or table.boolean("negative", False)
            category = table.string("category", None)
            if is_negative and category is not None:
                raise table.fail("category", "a negative bank has no category (use suppresses)")
            if not is_negative:
                if category is None:
                    raise table.fail(None, "category is required (the category its matches are reported under)")
                if category not in categories:
                    raise table.fail("category", f'category "{category}" is not defined')
            suppresses = table.strings("suppresses")
            if suppresses and not is_negative:
                raise table.fail("suppresses", "suppresses is for negative banks only")
            for item in suppresses:
                if item not in categories:
                    raise table.fail("suppresses", f'suppresses: category "{item}" is not defined', item=item)
            shown = table.data["path"]
            bank = load_hash_bank(path, display=shown)
            if is_negative and bank.vpdq:
                raise InputError(
                    f"{shown}:{bank.vpdq[0].line}: hash_type 'vpdq' is for [[hashlist]] "
                    "(known videos), not negative banks"
                )
            for key in ("vpdq_query_match", "vpdq_compared_match"):
                if is_negative and table.has(key):
                    raise table.fail(key, f"{key} is for [[hashlist]] with vpdq rows")
            query_match = table.number("vpdq_query_match", 0, 100)
            compared_match = table.number("vpdq_compared_match", 0, 100)
            entry = HashList(
                ident,
                path,
                category,
                table.integer("pdq_max_distance", 0, 256, 31),
                table.integer("pdq_min_quality", 0, 100, 50),
                is_negative,
                suppresses,
                table.string("description", ""),
                ctx.src.key(kind, table.index, None),
                bank,
                80.0 if query_match is None else query_match,
                0.0 if compared_match is None else compared_match,
            )
            (negative if is_negative else positive).append(entry)
            pairs_ids.append(ident)
    _unique(all_tables, pairs_ids, "hash list")
    return positive, negative


def _negative_concepts(ctx, doc, concepts: set[str]) -> list[NegativeConcept]:
    out = []
    tables = _array(ctx, doc, "negative_concept")
    for table in tables:
        ident = table.ident()
        texts = table.strings("texts")
        if not texts:
            raise table.fail("texts" if table.has("texts") else None, "texts must list at least one text")
        suppresses = table.strings("suppresses")
        if not suppresses:
            raise table.fail(
                "suppresses" if table.has("suppresses") else None, "suppresses must list the concept ids it cancels"
            )
        for item in suppresses:
            if item not in concepts:
                raise table.fail("suppresses", f'suppresses: concept "{item}" is not defined', item=item)
        out.append(
            NegativeConcept(
                ident,
                texts,
                table.number("threshold", -1, 1),
                suppresses,
                _templates(table),
                table.string("description", ""),
                ctx.src.key("negative_concept", table.index, None),
            )
        )
    _unique(tables, [n.id for n in out], "negative concept")
    return out


def _faces(ctx, doc, concepts: dict[str, Concept]) -> list[FaceGallery]:
    from audit.faces.gallery import GalleryError, gallery_files, read_descriptor_file

    out = []
    tables = _array(ctx, doc, "faces")
    for table in tables:
        ident = table.ident()
        value = table.string("gallery", required=True)
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = ctx.base_dir / path
        if path.is_dir():
            # the photos are part of the policy's identity: a new photo is a new policy hash
            files = gallery_files(path)
            for _label, photo in files:
                ctx.note_file(photo)
            empty = not files
        elif path.is_file():
            try:
                empty = len(read_descriptor_file(path)) == 0
            except GalleryError as exc:
                raise table.fail("gallery", f"gallery: {exc}") from None
            ctx.note_file(path)
        else:
            raise table.fail("gallery", f"gallery: no folder or descriptor file at {value}")
        gate = table.string("gate", None)
        if gate is not None and gate not in concepts:
            raise table.fail("gate", f'gate: concept "{gate}" is not defined')
        max_distance = table.number("max_distance", 0.01, 2.0)
        gate_threshold = table.number("gate_threshold", -1, 1)
        if gate_threshold is not None and gate is None:
            raise table.fail("gate_threshold", "gate_threshold needs gate (a concept id)")
        out.append(
            FaceGallery(
                ident,
                path,
                0.6 if max_distance is None else max_distance,
                int(table.integer("min_face_px", 8, 4096, 40) or 40),
                gate,
                gate_threshold,
                int(table.integer("max_side", 128, 4096, 640) or 640),
                table.string("description", ""),
                ctx.src.key("faces", table.index, None),
                empty,
            )
        )
    _unique(tables, [f.id for f in out], "faces")
    return out


def _check_signal(table: _Table, key: str, entry: str, known: frozenset[str]) -> None:
    for name in entry.split("|"):
        name = name.strip()
        kind, _, rest = name.partition(":")
        if not rest or kind not in SIGNAL_KINDS:
            raise table.fail(
                key,
                f'{key}: "{name}" is not a signal name (kind:id, kind one of ' + ", ".join(SIGNAL_KINDS) + ")",
                item=entry,
            )
        if rest == "*":
            continue
        if name == RULE_ERROR_SIGNAL and name not in known:
            raise table.fail(
                key,
                f'{key}: "{name}" fires only with [policy] timeout_is_finding = '
                "true (a regular-expression timeout is an engine failure, not "
                "a finding, unless the policy says so)",
                item=entry,
            )
        if name not in known:
            what = {
                "concept": "concept",
                "rule": "rule",
                "names": "name list",
                "hash": "hash list",
                "prompt": "built-in prompt signal",
                "face": "face gallery ([[faces]])",
                "provenance": "provenance signal",
            }[kind]
            options = sorted(s for s in known if s.startswith(kind + ":"))
            close = difflib.get_close_matches(name, options, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise table.fail(key, f'{key}: "{name}" names no {what} of this policy{hint}', item=entry)


def _flags(ctx, doc, categories: set[str], known: frozenset[str]) -> list[Flag]:
    out = []
    per_category: dict[str, int] = {}
    tables = _array(ctx, doc, "flag")
    for table in tables:
        category = table.string("category", required=True)
        if category not in categories:
            raise table.fail("category", f'category "{category}" is not defined')
        lists = {key: table.strings(key) for key in ("all", "any", "none")}
        if not lists["all"] and not lists["any"]:
            raise table.fail(None, "a flag needs all or any (none alone would fire on everything)")
        for key, entries in lists.items():
            for entry in entries:
                _check_signal(table, key, entry, known)
        min_any = table.integer("min_any", 1, max(1, len(lists["any"])), 1)
        per_category[category] = per_category.get(category, 0) + 1
        ident = table.ident() if table.has("id") else f"{category}#{per_category[category]}"
        out.append(
            Flag(
                ident,
                category,
                lists["all"],
                lists["any"],
                lists["none"],
                int(min_any or 1),
                table.string("description", ""),
                False,
                ctx.src.key("flag", table.index, None),
            )
        )
    _unique(tables, [f.id for f in out], "flag")
    return out


# ---------------------------------------------------------------------------- entry points


def _canonical(text: str) -> str:
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _syntax_error(source_name: str, exc: tomllib.TOMLDecodeError) -> InputError:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if match:
        line = match.group(1)
        message = message[: match.start()].strip() + f" (column {match.group(2)})"
    else:
        line = "end" if "end of document" in message else "1"
        message = re.sub(r"\s*\(at end of document\)", " (at end of file)", message)
    return InputError(f"{source_name}:{line}: TOML syntax error: {message}")


def parse_policy(
    text: str, source_name: str = "policy.toml", *, base_dir: str | Path | None = None, path: Path | None = None
) -> Policy:
    """Validate policy ``text``; files it names resolve against ``base_dir`` (default: the
    directory of ``source_name`` when that exists, else the current directory)."""
    canonical = _canonical(text)
    if base_dir is None:
        parent = Path(source_name).parent
        base_dir = parent if parent.is_dir() else Path.cwd()
    ctx = _Ctx(source_name, canonical, Path(base_dir))
    try:
        doc = tomllib.loads(canonical)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(source_name, exc) from None

    for key, value in doc.items():
        if key == "policy":
            if not isinstance(value, dict):
                raise ctx.fail("policy", None, None, "policy must be a table: write [policy]", label="policy")
            continue
        if key not in _ARRAYS:
            close = difflib.get_close_matches(key, ("policy",) + _ARRAYS, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            is_array = isinstance(value, list)
            line = ctx.src.key(key, 0 if is_array else None, None)
            raise InputError(f'{source_name}:{line}: unknown table or key "{key}"{hint}')

    meta = _Table(ctx, "policy", None, doc.get("policy", {}))
    name = meta.string("name", Path(source_name).stem)
    version = meta.data.get("version", "0")
    if isinstance(version, bool) or not isinstance(version, (str, int, float)):
        raise meta.fail("version", "version must be a string or a number")
    adjustment = meta.number("special_care_adjustment", 0, 0.5)
    timeout_ms = meta.integer("regex_timeout_ms", 1, 10_000, 250)
    max_chars = meta.integer("max_prompt_chars", 1_000, 10_000_000, MAX_PROMPT_CHARS)
    timeout_is_finding = meta.boolean("timeout_is_finding", False)

    categories = _categories(ctx, doc)
    category_ids = {c.id for c in categories}
    concepts = _concepts(ctx, doc)
    rules = _rules(ctx, doc)
    name_lists = _name_lists(ctx, doc)
    hashlists, negative_banks = _hashlists(ctx, doc, category_ids)
    negative_concepts = _negative_concepts(ctx, doc, {c.id for c in concepts})
    faces = _faces(ctx, doc, {c.id: c for c in concepts})

    known: set[str] = set(BUILTIN_PROMPT_SIGNALS) | set(BUILTIN_PROVENANCE_SIGNALS)
    if not timeout_is_finding:
        known.discard(RULE_ERROR_SIGNAL)
    for concept in concepts:
        known |= {f"concept:{concept.id}", f"concept:{concept.id}/image", f"concept:{concept.id}/prompt"}
    known |= {r.signal for r in rules} | {n.signal for n in name_lists}
    known |= {h.signal for h in hashlists}
    known |= {f.signal for f in faces}
    flags = _flags(ctx, doc, category_ids, frozenset(known))
    # a hash list's category is shorthand for a flag on its signal
    for hashlist in hashlists:
        flags.append(
            Flag(
                f"hashlist:{hashlist.id}",
                hashlist.category or "",
                any=(hashlist.signal,),
                implicit=True,
                line=hashlist.line,
            )
        )

    text_hash = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    digest = hashlib.sha256(b"audit-policy\0" + canonical.encode("utf-8"))
    for shown in sorted(ctx.files):
        digest.update(b"\0" + shown.encode("utf-8") + b"\0" + ctx.files[shown].encode("ascii"))

    policy = Policy(
        name=name,
        version=str(version),
        categories=tuple(categories),
        concepts=tuple(concepts),
        rules=tuple(rules),
        name_lists=tuple(name_lists),
        flags=tuple(flags),
        hashlists=tuple(hashlists),
        negative_banks=tuple(negative_banks),
        negative_concepts=tuple(negative_concepts),
        content_hash=digest.hexdigest(),
        text_hash=text_hash,
        path=path,
        description=meta.string("description", ""),
        special_care_adjustment=0.01 if adjustment is None else adjustment,
        regex_timeout_s=(timeout_ms or 250) / 1000.0,
        max_prompt_chars=max_chars or MAX_PROMPT_CHARS,
        timeout_is_finding=timeout_is_finding,
        faces=tuple(faces),
    )
    return policy


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate the policy file at ``path`` (``None``: the packaged default policy)."""
    if path is None:
        path = default_policy_path()
    shown = str(path)
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{shown}: policy file not found") from None
    except IsADirectoryError:
        raise InputError(f"{shown}: is a directory, not a policy file") from None
    except OSError as exc:
        raise InputError(f"{shown}: cannot read policy file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{shown}:{line}: policy file is not UTF-8") from None
    return parse_policy(text, shown, base_dir=path.parent, path=path.resolve())


def with_thresholds(concept: Concept, *, image: float | None = None, prompt: float | None = None) -> Concept:
    """``concept`` with calibrated thresholds filled in where the policy left them out."""
    return replace(
        concept,
        image_threshold=concept.image_threshold if concept.image_threshold is not None else image,
        prompt_threshold=concept.prompt_threshold if concept.prompt_threshold is not None else prompt,
    )
