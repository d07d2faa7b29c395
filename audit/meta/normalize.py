"""Coercions every parser shares: seeds as decimal text, steps as int, CFG as float.

Writers store numbers as numbers, strings, floats with ".0", or nonsense; these helpers
return ``None`` rather than raise when a value is unusable.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping


def seed_text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if math.isfinite(value) and value == int(value) else None
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return str(int(text))
        try:
            number = float(text)
        except ValueError:
            return None
        return str(int(number)) if math.isfinite(number) and number == int(number) else None
    return None


def to_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def to_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value if isinstance(value, (int, float)) else str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def to_text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value)
    return text if text.strip() else None


def first(mapping: Mapping[str, Any], keys: Iterable[str]) -> Any:
    """The first present, non-null value among ``keys`` (exact names, then case-insensitive)."""
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    lowered = {str(k).lower(): v for k, v in mapping.items()}
    for key in keys:
        value = lowered.get(key.lower())
        if value is not None:
            return value
    return None
