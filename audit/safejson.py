"""JSON from files under audit, parsed with bounded depth.

``json.loads`` recurses once per nesting level, so a document nested 100,000 levels deep
(a few hundred kilobytes of ``[``) raises ``RecursionError``, which is not a
``ValueError`` and escapes every ``except ValueError`` around a parse: one planted
sidecar or manifest row would abort a whole crawl. ``loads`` measures the depth first
with a linear scan that knows JSON strings, and refuses deeper documents with a
``ValueError`` like any other malformed JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Generation metadata nests a few levels (ComfyUI graphs: about 6); 256 leaves room for
# any honest writer and stays far below Python's recursion limit.
MAX_DEPTH = 256

_TOKENS = re.compile(r'[\[\]{}"\\]')
_TOKENS_BYTES = re.compile(rb'[\[\]{}"\\]')


class TooDeep(ValueError):
    pass


def depth(text: str | bytes, stop_above: int | None = None) -> int:
    """Deepest nesting of arrays and objects in ``text`` (strings skipped), in linear time:
    one pass over the structural characters, whatever the input (unbalanced, unterminated).
    ``stop_above``: return as soon as the depth passes it (a refusal needs no exact count)."""
    tokens = _TOKENS_BYTES if isinstance(text, (bytes, bytearray)) else _TOKENS
    if isinstance(text, memoryview):
        text, tokens = bytes(text), _TOKENS_BYTES
    level = deepest = 0
    in_string = False
    escaped = -1  # position of the character a backslash escapes
    for m in tokens.finditer(text):
        pos = m.start()
        ch = m.group()
        if isinstance(ch, bytes):
            ch = ch.decode()
        if in_string:
            if pos == escaped:
                continue
            if ch == "\\":
                escaped = pos + 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            level += 1
            if level > deepest:
                deepest = level
                if stop_above is not None and deepest > stop_above:
                    return deepest
        elif ch in "]}":
            level -= 1
    return deepest


def check_depth(text: str | bytes, max_depth: int = MAX_DEPTH) -> None:
    if depth(text, stop_above=max_depth) > max_depth:
        raise TooDeep(f"JSON nested more than {max_depth} levels deep")


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``ValueError`` (``TooDeep``) instead of recursing past
    ``max_depth`` levels, and for any other malformed input, as ``json.loads`` does."""
    check_depth(text, max_depth)
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - check_depth keeps us far from the limit
        raise TooDeep("JSON nested too deep") from None
