"""Regenerate the bundled sample archive: python scripts/make_sample_archive.py [OUT]"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from audit.sample import make_sample_archive

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "samples" / "archive")
later = out.with_name(out.name + "-later")
shutil.rmtree(out, ignore_errors=True)
shutil.rmtree(later, ignore_errors=True)
m = make_sample_archive(out, later_root=later)
print(f"wrote {len(m.items)} images to {out} ({len(m.planted())} planted in the first batch)")
