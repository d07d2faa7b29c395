"""Regenerate audit/policy/data/lookalikes.json from audit/policy/data/confusables.txt.

Run after replacing confusables.txt with a newer Unicode release (from the UTS #39 data files;
keep data/LICENSE-Unicode.txt beside it): ``python scripts/make_lookalikes.py``.
tests/test_confusables.py fails while the two disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.policy import normalize  # noqa: E402


def main() -> None:
    table = normalize.derive_lookalikes()
    out = normalize._LOOKALIKES_JSON
    out.write_text(json.dumps(table, ensure_ascii=False, indent=0) + "\n", "utf-8")
    print(f"{out}: {len(table)} lookalikes")


if __name__ == "__main__":
    main()
