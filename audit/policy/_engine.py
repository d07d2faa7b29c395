"""Regular expressions from a policy that cannot hang the run.

A pattern runs on RE2 (``google-re2``: linear time, no backtracking) when that is installed
and the pattern is RE2 syntax; otherwise (look-arounds, back-references, or no RE2) on the
``regex`` module with a per-search ``timeout``. A search that times out raises
``PatternTimeout``; callers record it as an error of that rule on that prompt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

try:  # pragma: no cover - presence depends on the environment
    import re2 as _re2
except ImportError:  # pragma: no cover
    _re2 = None

import regex as _regex

MAX_MATCHES_PER_SEARCH = 200


class PatternSyntaxError(ValueError):
    pass


class PatternTimeout(RuntimeError):
    pass


def re2_available() -> bool:
    return _re2 is not None


def _re2_options():
    options = _re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.max_mem = 256 << 20
    return options


@dataclass
class SafePattern:
    source: str
    engine: str  # "re2" or "regex"
    compiled: Any = field(repr=False)

    def found(self, text: str, timeout: float) -> bool:
        """Whether the pattern matches anywhere in ``text``."""
        if self.engine == "re2":
            return self.compiled.search(text) is not None
        return bool(self.spans(text, timeout))

    def spans(self, text: str, timeout: float) -> list[tuple[int, int]]:
        """Non-empty match spans in ``text`` (at most ``MAX_MATCHES_PER_SEARCH``)."""
        out: list[tuple[int, int]] = []
        if self.engine == "re2":
            for m in self.compiled.finditer(text):
                start, end = m.span()
                if end > start:
                    out.append((start, end))
                    if len(out) >= MAX_MATCHES_PER_SEARCH:
                        break
            return out
        deadline = time.monotonic() + timeout
        pos = 0
        while pos <= len(text) and len(out) < MAX_MATCHES_PER_SEARCH:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PatternTimeout(f"pattern {self.source!r} timed out after {timeout:g}s")
            try:
                m = self.compiled.search(text, pos, timeout=left)
            except TimeoutError:
                raise PatternTimeout(f"pattern {self.source!r} timed out after {timeout:g}s") from None
            if m is None:
                break
            start, end = m.span()
            if end > start:
                out.append((start, end))
                pos = end
            else:
                pos = end + 1
        return out


def compile_pattern(source: str, engine: str = "auto") -> SafePattern:
    """Compile ``source`` case-insensitively; ``engine`` is ``auto``, ``re2`` or ``regex``."""
    if engine not in ("auto", "re2", "regex"):
        raise ValueError(f"unknown regex engine {engine!r}")
    if engine in ("auto", "re2") and _re2 is not None:
        try:
            return SafePattern(source, "re2", _re2.compile(source, _re2_options()))
        except Exception as exc:  # re2.error: not RE2 syntax
            if engine == "re2":
                raise PatternSyntaxError(_message(exc)) from None
    elif engine == "re2":
        raise PatternSyntaxError("google-re2 is not installed")
    try:
        return SafePattern(source, "regex", _regex.compile(source, _regex.IGNORECASE))
    except _regex.error as exc:
        raise PatternSyntaxError(str(exc)) from None
    except (OverflowError, RecursionError, ValueError) as exc:
        raise PatternSyntaxError(str(exc)) from None


def _message(exc: Exception) -> str:
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text)
