"""Options with a fixed vocabulary, checked before a command does any work.

An empty or unknown value is a usage error (exit 2) in one line naming the option, the
accepted values and what was given: ``--fail-on ''`` must never mean "no threshold", and a
typo must not surface only after a crawl of a million files.
"""

from __future__ import annotations

from typing import Sequence

from audit.errors import UsageError

# Environment variables that stand for the options a session repeats on every command
# (`export AUDIT_INDEX=indexes/prod`); an option given on the command line wins.
INDEX_ENV = "AUDIT_INDEX"
POLICY_ENV = "AUDIT_POLICY"


def one_of(flag: str, value: str | None, allowed: Sequence[str]) -> str | None:
    """``value`` when it is one of ``allowed`` (None passes: the option was not given)."""
    if value is None:
        return None
    if value not in allowed:
        raise UsageError(f"{flag} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def fail_on(value: str | None) -> str | None:
    from audit.findings.store import SEVERITIES

    return one_of("--fail-on", value, SEVERITIES)


def device(value: str, *, probe: bool = True) -> str:
    """``--device``: malformed is a usage error (2), CUDA not usable here an environment error (3).
    ``probe=False`` (``--executor ray``): the spelling only, the GPUs are on the workers."""
    from audit.embed.device import check_device

    return check_device(value, probe=probe)


EXECUTOR_HELP = (
    "Where the work runs: local (process pools on this machine) or ray (Ray Data on the cluster "
    'named by RAY_ADDRESS, or a local Ray instance when unset; needs pip install ".[ray]"). '
    "The index is written by this process either way."
)


def executor(value: str) -> str:
    from audit.onray import EXECUTORS

    value = one_of("--executor", value, EXECUTORS)
    if value == "ray":  # without the extra: one line naming it (exit 3), before an index is created
        from audit.onray.session import require_ray

        require_ray()
    return value  # type: ignore[return-value]


def precision(value: str) -> str:
    from audit.embed.openclip import PRECISIONS

    return one_of("--precision", value, PRECISIONS)  # type: ignore[return-value]


def decision(value: str | None) -> str | None:
    from audit.findings.store import DECISIONS

    return one_of("--decision", value, DECISIONS)


def space(value: str) -> str:
    return one_of("--space", value, ("image", "prompt"))  # type: ignore[return-value]


def report_formats(value: str) -> tuple[str, ...]:
    """``--format``: comma-separated report formats; empty or unknown words are errors."""
    from audit.report import FORMATS, parse_formats

    if not value.strip():
        raise UsageError(f"--format must name one or more of {', '.join(FORMATS)}, not {value!r}")
    return parse_formats(value)


def index_type(value: str | None) -> str | None:
    """``--index-type``: auto, flat, hnsw[M], ivf[NLIST][,flat|sq8|pqM]; checked for syntax now
    (the PQ size against the vectors' dimension is checked when the index is built)."""
    from audit.index.choice import choose_index

    if value is None or value.strip().lower() == "auto":
        return value
    if not value.strip():
        raise UsageError(f"--index-type must be auto, flat, hnsw[M] or ivf[NLIST][,flat|sq8|pqM], not {value!r}")
    choose_index(1, 0, index_type=value)  # d=0: every PQ size divides it; raises UsageError on bad syntax
    return value


def memory_budget(value: str | None) -> str | None:
    from audit.index.choice import parse_size

    if value is not None:
        parse_size(value)
    return value
