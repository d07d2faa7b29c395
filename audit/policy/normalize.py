"""Text normalisation for prompt matching, with a map back to the original characters.

Evasions seen on generation platforms and what undoes them:

* case, accents, compatibility forms (fullwidth ``ｔｒｉ``, ligatures, math letters) → case
  folding, NFKD with combining marks dropped;
* zero-width and control characters (``tri\u200dangle``) → removed;
* confusable letters from other scripts (Cyrillic ``а`` in ``triаngle``, Greek ``ο``) → Latin;
* leetspeak (``tr1angle``, ``tr!@ngle``): ``0→o 1→i|l 3→e 4→a 5→s 7→t @→a $→s`` inside
  tokens that contain a letter (so ``aged 12`` keeps its digits);
* spacing tricks: ``t r i a n g l e``, ``t.r.i.a.n.g.l.e``, ``tri-angle``, ``triiiangle``.

``normalize_variants`` returns several normalised texts (``base``: case, accents, widths and
invisible characters only; ``skeleton``: plus confusables, leetspeak and spacing; and
``skeleton-l`` reading ``1`` as ``l`` when the text has a ``1``). Rules run over every variant
and hits are deduplicated by their span in the original text, so the aggressive variant adds
recall without losing what the plain one finds (``aged 12`` keeps its digits in ``base``).

Every variant carries ``starts``/``ends``: for each normalised character, the span of original
characters it came from, so a hit reports the exact span of the *original* prompt.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

__all__ = [
    "NormalizedText",
    "normalize_variants",
    "normalize_term",
    "term_pattern",
    "blank_spans",
]

# Lookalikes from Cyrillic and Greek (both cases: an uppercase Greek eta looks like H, its
# lowercase like n) and a few Latin oddities NFKC leaves alone.
_CONFUSABLES = {
    # Cyrillic lowercase
    "а": "a", "в": "b", "е": "e", "ё": "e", "є": "e", "і": "i", "ї": "i", "ј": "j", "к": "k",
    "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x",
    "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ь": "b", "һ": "h", "ɡ": "g",
    # Cyrillic uppercase
    "А": "a", "В": "b", "Е": "e", "Ё": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p",
    "С": "c", "Т": "t", "Х": "x", "У": "y", "Ѕ": "s", "І": "i", "Ј": "j", "Ӏ": "l", "Һ": "h",
    # Greek lowercase
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v",
    "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j",
    # Greek uppercase
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n",
    "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
    # Latin lookalikes NFKC keeps
    "ı": "i", "ɑ": "a", "ɩ": "i", "ʟ": "l", "ᴀ": "a", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g",
    "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r",
    "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z", "ø": "o", "ð": "d",
    "ł": "l", "đ": "d", "ħ": "h",
}
_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
_LEET_L = dict(_LEET, **{"1": "l"})
# Characters dropped between two letters ("tri-angle", "tri.angle", "tri_angle").
_JOINERS = frozenset("-_.·•'’`*~+|/\\:,")
_SPACE_CONTROLS = frozenset("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85")


@dataclass(frozen=True)
class NormalizedText:
    """A normalised text and, per character, the original span ``[starts[i], ends[i])``."""

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]
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


@functools.lru_cache(maxsize=8192)
def _skeleton_char(ch: str) -> str:
    direct = _CONFUSABLES.get(ch)
    if direct is not None:
        return direct
    return "".join(_CONFUSABLES.get(c, c) for c in _base_char(ch))


def _map_chars(text: str, char_fn) -> tuple[list[str], list[int], list[int]]:
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, ch in enumerate(text):
        if ch.isascii() and ch.isalnum():
            out = ch.lower()
        else:
            out = char_fn(ch)
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
    return chars, starts, ends


def _is_tokenchar(c: str, leet: dict[str, str]) -> bool:
    return c.isalnum() or c in leet


def _apply_leet(chars: list[str], leet: dict[str, str]) -> None:
    """Map leet characters inside tokens that contain a letter, in place."""
    n = len(chars)
    tokens: list[tuple[int, int]] = []
    i = 0
    while i < n:
        if _is_tokenchar(chars[i], leet):
            j = i
            while j < n and _is_tokenchar(chars[j], leet):
                j += 1
            tokens.append((i, j))
            i = j
        else:
            i += 1
    for t, (a, b) in enumerate(tokens):
        has_letter = any(chars[k].isalpha() for k in range(a, b))
        if not has_letter and b - a == 1 and chars[a] in leet:
            # a lone leet character among spaced single letters ("t r 1 a n g l e")
            prev_single = t > 0 and tokens[t - 1][1] - tokens[t - 1][0] == 1 \
                and chars[tokens[t - 1][0]].isalpha()
            next_single = t + 1 < len(tokens) and tokens[t + 1][1] - tokens[t + 1][0] == 1 \
                and chars[tokens[t + 1][0]].isalpha()
            has_letter = prev_single or next_single
        if has_letter:
            for k in range(a, b):
                mapped = leet.get(chars[k])
                if mapped is not None:
                    chars[k] = mapped


def _drop(chars, starts, ends, drop: set[int]):
    if not drop:
        return chars, starts, ends
    keep = [k for k in range(len(chars)) if k not in drop]
    return [chars[k] for k in keep], [starts[k] for k in keep], [ends[k] for k in keep]


def _join_separated_letters(chars, starts, ends, keep_article: bool = True):
    """Drop joiner runs between letters and spaces inside runs of single spaced letters.

    With ``keep_article``, a run that starts with the one-letter words "a" or "i" keeps them
    apart ("a t r i a n g l e" → "a triangle"); the caller also builds the fully joined form.
    """
    n = len(chars)
    drop: set[int] = set()
    # 1. "tri-angle", "t.r.i.a.n.g.l.e": joiners between two letters
    i = 0
    while i < n:
        if chars[i] in _JOINERS and i > 0 and chars[i - 1].isalpha():
            j = i
            while j < n and chars[j] in _JOINERS:
                j += 1
            if j < n and chars[j].isalpha():
                drop.update(range(i, j))
            i = j
        else:
            i += 1
    # 2. "t r i a n g l e", "t. r. i": single letters separated by spaces/joiners (3 or more)
    tokens: list[tuple[int, int]] = []
    i = 0
    while i < n:
        if chars[i].isalnum() and i not in drop:
            j = i
            while j < n and (chars[j].isalnum() or j in drop):
                j += 1
            tokens.append((i, j))
            i = j
        else:
            i += 1

    def single(tok):
        a, b = tok
        return b - a == 1 and chars[a].isalpha()

    def gap_ok(a, b):
        return 0 < b - a <= 3 and all(chars[k] == " " or chars[k] in _JOINERS for k in range(a, b))

    t = 0
    while t < len(tokens):
        if not single(tokens[t]):
            t += 1
            continue
        u = t
        while u + 1 < len(tokens) and single(tokens[u + 1]) \
                and gap_ok(tokens[u][1], tokens[u + 1][0]):
            u += 1
        first = t
        if keep_article and u - t + 1 >= 4 and chars[tokens[t][0]] in "ai":
            first = t + 1
        if u - first + 1 >= 3:
            for v in range(first, u):
                drop.update(range(tokens[v][1], tokens[v + 1][0]))
        t = u + 1
    chars, starts, ends = _drop(chars, starts, ends, drop)
    # 3. "triiiangle": three or more of the same letter become one (spanning the whole run)
    out_c: list[str] = []
    out_s: list[int] = []
    out_e: list[int] = []
    k = 0
    while k < len(chars):
        j = k + 1
        while j < len(chars) and chars[j] == chars[k]:
            j += 1
        if j - k >= 3 and chars[k].isalpha():
            out_c.append(chars[k])
            out_s.append(starts[k])
            out_e.append(ends[j - 1])
        else:
            out_c.extend(chars[k:j])
            out_s.extend(starts[k:j])
            out_e.extend(ends[k:j])
        k = j
    chars, starts, ends = out_c, out_s, out_e
    return chars, starts, ends


def _make(chars, starts, ends, variant, offset) -> NormalizedText:
    return NormalizedText("".join(chars), tuple(starts), tuple(ends), variant, offset)


def normalize_variants(text: str, *, offset: int = 0) -> list[NormalizedText]:
    """The normalised variants of ``text`` (distinct texts only, ``base`` first)."""
    if not text:
        return [NormalizedText("", (), (), "base", offset)]
    chars, starts, ends = _map_chars(text, _base_char)
    variants = [_make(chars, starts, ends, "base", offset)]
    skel, s_starts, s_ends = _map_chars(text, _skeleton_char)
    tables = [("skeleton", _LEET)]
    if "1" in text:
        tables.append(("skeleton-l", _LEET_L))
    seen = {variants[0].text}
    for name, table in tables:
        work = list(skel)
        _apply_leet(work, table)
        for suffix, keep in (("", True), ("-joined", False)):
            out = _join_separated_letters(list(work), list(s_starts), list(s_ends), keep)
            variant = _make(*out, name + suffix, offset)
            if variant.text not in seen:
                seen.add(variant.text)
                variants.append(variant)
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
    import re

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
