"""A small copy of the bundled sample archive, for tests whose claim is about how a run goes
(executors, interruptions), not about the whole archive: every folder of it (A1111 PNGs,
ComfyUI PNGs, JPEGs, duplicates) and every planted red triangle, so flagging still finds
something, at about a quarter of the items (embedding them is what those tests wait on)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.paths import REPO

SAMPLE = REPO / "samples" / "archive"


def copy_sample_subset(dest: Path, per_folder: int = 16) -> Path:
    """The first ``per_folder`` images of each folder of the sample archive and all its
    planted items of the first batch, copied to ``dest`` (created); returns ``dest``."""
    planted = {t["path"] for t in json.loads((SAMPLE / "truth.json").read_text()) if t["planted"]}
    for folder in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
        images = sorted(folder.iterdir())
        keep = images[:per_folder] + [p for p in images[per_folder:] if p.relative_to(SAMPLE).as_posix() in planted]
        (dest / folder.name).mkdir(parents=True, exist_ok=True)
        for p in keep:
            shutil.copy2(p, dest / folder.name / p.name)
    return dest
