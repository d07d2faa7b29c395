"""Text normalisation for prompt matching, with a map back to the original characters.

Evasions seen on generation platforms and what undoes them:

* case, accents, compatibility forms (fullwidth ``ｔｒｉ``, ligatures, math letters) → case
  folding, NFKD with combining marks dropped;
* zero-width and control characters (``tri\u200dangle``) → removed;
* confusable letters from other scripts (Cyrillic ``а`` in ``triаngle``, Greek ``ο``) → Latin;
* leetspeak (``tr1angle``, ``tri@ngle``): ``0→o 1→i|l 3→e 4→a 5→s 7→t @→a $→s`` inside
  tokens that contain a letter (so ``aged 12`` keeps its digits);
* spacing tricks: ``t r i a n g l e``, ``t.r.i.a.n.g.l.e``, ``tri-angle``, ``tri_angle``,
  ``triiiangle``; ``red_triangle`` (tag style) reads as two words.

``normalize_variants`` returns the distinct normalised texts among:

* ``base``: case, accents, widths, invisible characters, ``_`` as a space;
* ``skeleton``: plus confusables, leetspeak (``1`` as ``i``), spaced single letters joined
  (keeping a leading "a"/"i" apart: "a t r i a n g l e" → "a triangle"), stretched letters;
* ``skeleton-joined``: plus joiners between letters removed ("tri-angle" → "triangle") and
  every spaced run joined;
* ``skeleton-l`` / ``skeleton-l-joined``: the same reading ``1`` as ``l`` (only when the text
  has a ``1``).

Rules run over every variant and hits are deduplicated by their span in the original text, so
the aggressive variants add recall without losing what the plain one finds (``aged 12`` keeps
its digits in ``base``; ``red-triangle`` is found in ``base`` while ``tri-angle`` is found in
``skeleton-joined``). Plain ASCII prompts take a fast path (no per-character loop).

Every variant carries ``starts``/``ends``: for each normalised character, the span of original
characters it came from, so a hit reports the exact span of the *original* prompt.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = [
    "NormalizedText",
    "normalize_variants",
    "normalize_term",
    "term_pattern",
    "blank_spans",
]

# Lookalikes come from Unicode's confusables (UTS #39, data/confusables.txt, Unicode License
# v3 in data/LICENSE-Unicode.txt): every non-ASCII character whose prototype reads as Latin
# letters. These hand-picked readings come first: lookalikes Unicode leaves out (small
# capitals, Cyrillic "в" and "н", Greek "κ" and "ω") and places where its prototype is not
# the letter a reader sees in a prompt (Greek "β" is "b", not "ß"; Cyrillic "І" is "i").
_CONFUSABLES = {
    # Cyrillic lowercase
    "в": "b",
    "є": "e",
    "к": "k",
    "м": "m",
    "н": "h",
    "п": "n",
    "т": "t",
    "ь": "b",
    # Greek lowercase
    "β": "b",
    "ε": "e",
    "κ": "k",
    "μ": "u",
    "τ": "t",
    "χ": "x",
    "ω": "w",
    # Greek uppercase
    "Β": "b",
    "Η": "h",
    "Ν": "n",
    "Υ": "y",
    # Latin lookalikes NFKC keeps
    "ʟ": "l",
    "ᴀ": "a",
    "ᴅ": "d",
    "ᴇ": "e",
    "ɢ": "g",
    "ʜ": "h",
    "ᴊ": "j",
    "ᴋ": "k",
    "ᴍ": "m",
    "ɴ": "n",
    "ᴘ": "p",
    "ʀ": "r",
    "ᴛ": "t",
    "ð": "d",
}
_CONFUSABLES_TXT = Path(__file__).with_name("data") / "confusables.txt"
_LOOKALIKES_JSON = Path(__file__).with_name("data") / "lookalikes.json"
_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
_LEET_L = dict(_LEET, **{"1": "l"})  # (replaced by its translate table below)
_SPACE_CONTROLS = frozenset("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85")


@dataclass(frozen=True)
class NormalizedText:
    """A normalised text and, per character, the original span ``[starts[i], ends[i])``."""

    text: str
    starts: Sequence[int]
    ends: Sequence[int]
    variant: str = "base"
    offset: int = 0  # added to every original position (windows of over-long prompts)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that normalised ``[start, end)`` came from."""
        if not self.text:
            return (self.offset, self.offset)
        if end <= start:
            pos = self.starts[start] if start < len(self.starts) else self.ends[-1]
            return (pos + self.offset, pos + self.offset)
        return (self.starts[start] + self.offset, self.ends[end - 1] + self.offset)


@functools.lru_cache(maxsize=8192)
def _base_char(ch: str) -> str:
    if ch == "_":  # tag_style_words: "_" separates words
        return " "
    category = unicodedata.category(ch)
    if category == "Cf":  # zero-width joiners/spaces, bidi marks, soft hyphen, BOM
        return ""
    if category == "Cc":
        return " " if ch in _SPACE_CONTROLS else ""
    if category in ("Zs", "Zl", "Zp"):
        return " "
    if category in ("Mn", "Me"):
        return ""
    out = unicodedata.normalize("NFKD", ch.casefold())
    out = "".join(c for c in out if unicodedata.category(c) not in ("Mn", "Me", "Cf"))
    out = unicodedata.normalize("NFC", out)
    return " " if out.isspace() else out


def derive_lookalikes(confusables_txt: Path = _CONFUSABLES_TXT) -> dict[str, str]:
    """Non-ASCII character -> the Latin letters its confusables.txt prototype reads as
    (case-folded, accents dropped). ASCII sources are left out: digits and symbols are the
    leetspeak layer's to read, only inside words. ``scripts/make_lookalikes.py`` stores the
    result as data/lookalikes.json, which loads in a millisecond instead of parsing 10,000
    lines on the first non-ASCII prompt."""
    table: dict[str, str] = {}
    with open(confusables_txt, encoding="utf-8-sig") as lines:
        for line in lines:
            if not line.strip() or line.startswith("#"):
                continue
            source, target, _ = line.split(";", 2)
            ch = chr(int(source, 16))
            if ch.isascii():
                continue
            latin = "".join(_base_char(chr(int(cp, 16))) for cp in target.split())
            if latin.isascii() and latin.isalpha():
                table[ch] = latin
    return dict(sorted(table.items()))


@functools.cache
def unicode_lookalikes() -> dict[str, str]:
    """The table ``derive_lookalikes`` makes, as stored in data/lookalikes.json."""
    return json.loads(_LOOKALIKES_JSON.read_text("utf-8"))


@functools.lru_cache(maxsize=8192)
def _skeleton_char(ch: str) -> str:
    if ch == "_":  # kept for the joined variant ("tri_angle"); a space in the others
        return "_"
    direct = _CONFUSABLES.get(ch)
    if direct is not None:
        return direct
    base = _base_char(ch)  # NFKD first: fullwidth and math letters, accents
    if base.isascii():
        return base
    lookalikes = unicode_lookalikes()
    mapped = "".join(_CONFUSABLES.get(c) or lookalikes.get(c, c) for c in base)
    return mapped if mapped.isascii() else lookalikes.get(ch, mapped)


_L = r"[^\W\d_]"  # a letter
_SEP_CHARS = "-_.·•'’`*~+|/\\"
_SEP = "[" + re.escape(_SEP_CHARS) + "]"
_JOINER_RUN = re.compile(rf"(?<={_L}){_SEP}+(?={_L})")
_SINGLE_RUN = re.compile(rf"(?<![^\W_]){_L}(?:[ {re.escape(_SEP_CHARS)}]{{1,3}}{_L}(?![^\W_])){{2,}}")
_TRIPLE = re.compile(rf"({_L})\1{{2,}}")
_LEET_TOKEN = re.compile(r"[\w@$]+")
_HAS_LEET = re.compile(r"[0134579@$]")
_HAS_LETTER = re.compile(_L)
_ASCII_SLOW = {
    "base": re.compile(r"[\x00-\x1f\x7f_]|\s\s|^\s|\s$"),
    "skeleton": re.compile(r"[\x00-\x1f\x7f]|\s\s|^\s|\s$"),
}


def _map_chars(text: str, char_fn, kind: str):
    """Per-character mapping with whitespace runs collapsed: (text, starts, ends)."""
    if text.isascii() and not _ASCII_SLOW[kind].search(text):
        n = len(text)
        return text.lower(), range(n), range(1, n + 1)
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, ch in enumerate(text):
        out = ch.lower() if ch.isascii() and ch.isalnum() else char_fn(ch)
        for c in out:
            if c == " " and (not chars or chars[-1] == " "):
                continue  # collapse whitespace runs; drop leading spaces
            chars.append(c)
            starts.append(i)
            ends.append(i + 1)
    while chars and chars[-1] == " ":
        chars.pop()
        starts.pop()
        ends.pop()
    return "".join(chars), starts, ends


def _apply_leet(text: str, table: dict[int, str]) -> str:
    """Leet characters read as letters inside tokens that contain a letter (same length)."""
    if not _HAS_LEET.search(text):
        return text
    tokens = list(_LEET_TOKEN.finditer(text))
    pieces: list[str] = []
    last = 0
    for t, m in enumerate(tokens):
        token = m.group()
        if not _HAS_LEET.search(token):
            continue
        convert = bool(_HAS_LETTER.search(token))
        if not convert and len(token) == 1:
            # a lone leet character among spaced single letters ("t r 1 a n g l e")
            def single(k):
                return 0 <= k < len(tokens) and len(tokens[k].group()) == 1 and tokens[k].group().isalpha()

            convert = single(t - 1) or single(t + 1)
        if convert:
            pieces.append(text[last : m.start()])
            pieces.append(token.translate(table))
            last = m.end()
    if not pieces:
        return text
    pieces.append(text[last:])
    return "".join(pieces)


def _respace(text: str, join: bool, starts, ends):
    """Undo spacing tricks; ``join`` also removes joiners between letters ("tri-angle").

    Without ``join``, "_" reads as a space and a spaced run that starts with the one-letter
    words "a"/"i" keeps them apart ("a t r i a n g l e" → "a triangle").
    """
    if not join:
        text = text.replace("_", " ")
    n = len(text)
    drop = bytearray(n)
    changed = False
    if join:
        for m in _JOINER_RUN.finditer(text):
            drop[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
            changed = True
    for m in _SINGLE_RUN.finditer(text):
        a, b = m.span()
        letters = [k for k in range(a, b) if text[k].isalpha()]
        first = letters[0]
        if not join and len(letters) >= 4 and text[first] in "ai":
            first = letters[1]
        if len([k for k in letters if k >= first]) < 3:
            continue
        for k in range(first, b):
            if not text[k].isalpha():
                drop[k] = 1
                changed = True
    new_ends = None
    for m in _TRIPLE.finditer(text):
        a, b = m.span()
        if new_ends is None:
            new_ends = list(ends)
        new_ends[a] = ends[b - 1]
        drop[a + 1 : b] = b"\x01" * (b - a - 1)
        changed = True
    if not changed:
        return text, starts, ends
    ends = new_ends if new_ends is not None else ends
    keep = [k for k in range(n) if not drop[k]]
    return "".join(text[k] for k in keep), [starts[k] for k in keep], [ends[k] for k in keep]


_LEET_I = str.maketrans(_LEET)
_LEET_L = str.maketrans(_LEET_L)


def normalize_variants(text: str, *, offset: int = 0) -> list[NormalizedText]:
    """The normalised variants of ``text`` (distinct texts only, ``base`` first)."""
    if not text:
        return [NormalizedText("", (), (), "base", offset)]
    base, b_starts, b_ends = _map_chars(text, _base_char, "base")
    variants = [NormalizedText(base, b_starts, b_ends, "base", offset)]
    seen = {base}
    skel, s_starts, s_ends = _map_chars(text, _skeleton_char, "skeleton")
    tables = [("skeleton", _LEET_I)]
    if "1" in text:
        tables.append(("skeleton-l", _LEET_L))
    for name, table in tables:
        leet = _apply_leet(skel, table)
        for suffix, join in (("", False), ("-joined", True)):
            out, starts, ends = _respace(leet, join, s_starts, s_ends)
            if out not in seen:
                seen.add(out)
                variants.append(NormalizedText(out, starts, ends, name + suffix, offset))
    return variants


def normalize_term(term: str) -> str:
    """Base normalisation of a policy term (word, name, allow phrase), whitespace collapsed."""
    return normalize_variants(term)[0].text.strip()


def term_pattern(term: str) -> str:
    """A regular expression (RE2-compatible) for a whole word or phrase of normalised text.

    Tokens of the phrase may be separated by up to three non-word characters or by nothing
    ("self harm", "self-harm", "selfharm"); word boundaries apply where the phrase starts or ends
    with a word character.
    """
    norm = normalize_term(term)
    tokens = [t for t in re.split(r"[\W_]+", norm) if t]
    if not tokens:
        return re.escape(norm)
    body = r"[\W_]{0,3}".join(re.escape(t) for t in tokens)
    prefix = r"\b" if tokens[0][0].isascii() and tokens[0][0].isalnum() else ""
    suffix = r"\b" if tokens[-1][-1].isascii() and tokens[-1][-1].isalnum() else ""
    return f"{prefix}{body}{suffix}"


def blank_spans(norm: NormalizedText, spans) -> NormalizedText:
    """``norm`` with the given normalised spans replaced by spaces (same length and map)."""
    spans = [(a, b) for a, b in spans if b > a]
    if not spans:
        return norm
    chars = list(norm.text)
    for a, b in spans:
        for k in range(a, b):
            chars[k] = " "
    return NormalizedText("".join(chars), norm.starts, norm.ends, norm.variant, norm.offset)
