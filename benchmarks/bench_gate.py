"""Latency of the request-time prompt gate (``audit check-prompt`` / ``PromptGate.check``).

The packaged default policy with its real-persons name list filled with 100,000 synthetic
names (two capitalised random words each), checked against toy-world captions mixed with
random filler words; one prompt in ten contains a listed name, every prompt has a negative
prompt. Two modes:

* ``rules``: prompt rules, name lists and resource lists only (target p99 <= 2 ms);
* ``toy-tower``: the same plus the prompt's toy-shapes CLIP text embedding scored against
  every concept (target p99 <= 20 ms).

Torch runs on one thread, as ``audit check-prompt --model`` sets it. The gate is compiled once (reported: ``compile_s``). RE2 builds its automaton lazily, so the
first few thousand prompts are slower; ``warm-up`` prompts are checked first and reported
apart, then ``--prompts`` are timed.

    python benchmarks/bench_gate.py [--names 100000] [--prompts 5000] [--warmup 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "results"


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 9)))


def _percentiles(times: list[float]) -> dict:
    times = sorted(times)
    at = lambda q: round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 3)  # noqa: E731
    return {"n": len(times), "p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(times[-1] * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=100_000)
    parser.add_argument("--prompts", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=3000)
    args = parser.parse_args()

    from audit.embed.toyworld import captions, random_scenes
    from audit.policy import load_policy
    from audit.policy.gate import PromptGate

    rng = random.Random(0)
    names = tuple(dict.fromkeys(f"{_word(rng).capitalize()} {_word(rng).capitalize()}" for _ in range(args.names)))
    base = load_policy()
    listed = tuple(replace(nl, names=names) if nl.id == "real-persons" else nl for nl in base.name_lists)
    policy = replace(base, name_lists=listed, content_hash=base.content_hash + ":bench-names")
    filler = [_word(rng) for _ in range(3000)]
    scenes = random_scenes(7, args.prompts + args.warmup)

    def prompt(i: int) -> str:
        text = captions(scenes[i], rng)[0] + ", " + " ".join(rng.choice(filler) for _ in range(rng.randint(3, 30)))
        if i % 10 == 0:
            text += ", portrait of " + names[rng.randrange(len(names))]
        return text

    prompts = [prompt(i) for i in range(args.prompts + args.warmup)]
    result = {"machine_cpus": os.cpu_count(), "names": len(names), "policy": base.name}
    from audit.embed.openclip import load_embedder

    import torch

    torch.set_num_threads(1)  # as `audit check-prompt --model` runs: one request at a time
    for mode in ("rules", "toy-tower"):
        t = time.perf_counter()
        embedder = load_embedder("toy-shapes") if mode == "toy-tower" else None
        gate = PromptGate(policy, embedder)
        compile_s = time.perf_counter() - t
        timings, denied, with_signals = [], 0, 0
        for i, text in enumerate(prompts):
            t = time.perf_counter()
            answer = gate.check(text, "blurry, low quality, watermark")
            timings.append(time.perf_counter() - t)
            denied += answer["verdict"] == "deny"
            with_signals += bool(answer["signals"])
        result[mode] = {
            "compile_s": round(compile_s, 2),
            "warm-up": _percentiles(timings[: args.warmup]),
            "timed": _percentiles(timings[args.warmup :]),
            "denied": denied,
            "with_signals": with_signals,
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gate.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
