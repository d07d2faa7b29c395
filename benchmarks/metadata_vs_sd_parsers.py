"""Score our metadata reader and the `sd-parsers` library on the same corpus files, side by side.

    python benchmarks/metadata_vs_sd_parsers.py [CORPORA_METADATA_DIR]

Both readers are scored by ``audit.meta.scoring`` (same fields, same comparison rules).
sd-parsers results are mapped to the same observation shape: top-level prompt/negative are
its ``full_prompt``/``full_negative_prompt``, sampler fields come from its first sampler, and
its samplers list becomes ``samplers`` with ``sampler_id`` as node id.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from audit.meta import extract  # noqa: E402
from audit.meta.scoring import default_corpora_root, format_table, observe_extraction, score_corpus  # noqa: E402


def observe_ours(path: Path) -> dict:
    return observe_extraction(extract(path.read_bytes()))


def make_sd_parsers_observer(eager: bool = False):
    from sd_parsers import ParserManager
    from sd_parsers.extractors import Eagerness

    # EAGER also reads alpha-channel "stealth" data (sd-parsers calls it expensive)
    manager = ParserManager(eagerness=Eagerness.EAGER if eager else Eagerness.DEFAULT)

    def observe(path: Path) -> dict:
        try:
            info = manager.parse(str(path))
        except Exception:  # noqa: BLE001 - unreadable files: the peer reports nothing
            info = None
        if info is None:
            return {"has_generation_metadata": False}
        first = info.samplers[0] if info.samplers else None
        params = first.parameters if first else {}
        model = first.model if first else None
        observed = {
            "has_generation_metadata": True,
            "prompt": info.full_prompt or None,
            "negative_prompt": info.full_negative_prompt,
            "seed": params.get("seed"),
            "steps": params.get("steps"),
            "sampler": first.name if first else None,
            "cfg_scale": params.get("cfg_scale"),
            "model": model.name if model else None,
            "model_hash": model.hash if model else None,
            "samplers": [
                {
                    "node_id": s.sampler_id,
                    "sampler": s.name,
                    "seed": s.parameters.get("seed"),
                    "steps": s.parameters.get("steps"),
                    "cfg_scale": s.parameters.get("cfg_scale"),
                    "model": s.model.name if s.model else None,
                    "prompts": [{"node_id": p.prompt_id, "text": p.value} for p in s.prompts],
                    "negative_prompts": [{"node_id": p.prompt_id, "text": p.value} for p in s.negative_prompts],
                }
                for s in info.samplers
            ],
        }
        return observed

    return observe


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else default_corpora_root()
    if not any(root.glob("*/EXPECTED.json")):
        print(f"no corpora under {root}", file=sys.stderr)
        return 2
    reports, seconds = {}, {}
    readers = (
        ("audit.meta", observe_ours),
        ("sd-parsers", make_sd_parsers_observer()),
        ("sd-parsers EAGER", make_sd_parsers_observer(eager=True)),
    )
    for name, observer in readers:
        start = time.perf_counter()
        reports[name] = score_corpus(observer, root)
        seconds[name] = time.perf_counter() - start
    print(format_table(reports))
    print(" ".join(f"{name}: {secs:.2f}s" for name, secs in seconds.items()))
    for name, report in reports.items():
        print(f"{name}: {report.passed}/{report.total} = {100 * report.score:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
