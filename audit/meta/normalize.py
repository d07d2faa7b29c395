"""Coercions every parser shares: seeds as decimal text, steps as int, CFG as float.

Writers store numbers as numbers, strings, floats with ".0", or nonsense; these helpers
return ``None`` rather than raise when a value is unusable.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

# Seeds run to 2**64-1 (20 digits); a longer run of digits is not a seed (and Python refuses to
# convert more than 4300 digits at all). Only ASCII digits: str.isdigit() also accepts "²".
_SEED = re.compile(r"-?[0-9]{1,40}")
_SEED_MAX = 10**40
_INT64 = 1 << 63  # what the catalog's integer columns hold


def seed_text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if -_SEED_MAX < value < _SEED_MAX else None
    if isinstance(value, float):
        return str(int(value)) if math.isfinite(value) and value == int(value) and abs(value) < _SEED_MAX else None
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 64:
            return None
        if _SEED.fullmatch(text):
            return str(int(text))
        try:
            number = float(text)
        except ValueError:
            return None
        return seed_text(number)
    return None


def to_int(value: Any) -> int | None:
    """An integer the catalog can store (signed 64-bit), else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else None
    if isinstance(value, str) and len(value) > 64:
        return None
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(number) or number != int(number):
        return None
    return to_int(int(number))


def to_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str) and len(value) > 64:
        return None
    try:
        number = float(value if isinstance(value, (int, float)) else str(value).strip())
    except (TypeError, ValueError, OverflowError):
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
