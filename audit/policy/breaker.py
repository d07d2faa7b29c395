"""A per-run circuit breaker for the policy's patterns: a broken rule costs seconds, not hours.

Every regular expression already has a per-search time limit (``_engine``), but a
catastrophic pattern (``(a|aa)+(?=b)``) then costs that limit on every prompt it meets, and a
pattern that is merely slow (0.2 s a prompt, under the limit) costs that on every prompt. The
breaker watches each *owner* of patterns (a rule ``rule:ID`` with its allow phrases, a name
list ``names:ID``) over one flag run and disables it for the rest of the run when either

* it timed out ``MAX_TIMEOUTS`` times, or
* the CPU time it used exceeds ``SLOW_GRACE_S + SLOW_MEAN_S × evaluations`` (an evaluation: one
  field of one prompt, every normalised variant): a rule averaging 10 ms a prompt is broken, one
  averaging 50 µs never trips however large the archive.

CPU time of this thread (``time.thread_time``), not wall time: a loaded machine must not
disable a sound rule. A disabled owner is recorded once (``troubles``), with how many prompts
were left unchecked, so the run says exactly what was not evaluated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["MAX_TIMEOUTS", "SLOW_GRACE_S", "SLOW_MEAN_S", "PatternBreaker", "PatternTrouble"]

MAX_TIMEOUTS = 3  # timeouts of one owner before it is disabled for the run
SLOW_GRACE_S = 2.0  # CPU seconds any owner may spend before its mean cost is judged
SLOW_MEAN_S = 0.01  # CPU seconds per evaluation above which an owner counts as broken

clock = time.thread_time


@dataclass
class PatternTrouble:
    """What went wrong with one owner of patterns during a run."""

    owner: str  # "rule:ID" or "names:ID"
    timeouts: int = 0
    seconds: float = 0.0  # CPU time spent in its searches
    evaluations: int = 0
    disabled: str | None = None  # why it was disabled ("timeouts" | "slow"), None while active
    not_checked: int = 0  # evaluations skipped after it was disabled
    timeout_s: float = 0.0

    def message(self) -> str:
        """One line for a person: what happened and what was therefore not checked."""
        limit = f"{self.timeout_s * 1000:g} ms" if self.timeout_s else "the limit"
        if self.disabled == "timeouts":
            head = (
                f"policy {self.owner} disabled for this run after {self.timeouts} regular-expression "
                f"timeouts ({limit} each)"
            )
        elif self.disabled == "slow":
            head = (
                f"policy {self.owner} disabled for this run: {self.seconds:.1f} s of matching over "
                f"{self.evaluations} prompt fields (over {SLOW_MEAN_S * 1000:g} ms each)"
            )
        else:
            return (
                f"policy {self.owner}: {self.timeouts} regular-expression timeouts ({limit} each); "
                f"those prompt fields were not fully checked against it"
            )
        return f"{head}; {self.not_checked} prompt fields were not checked against it (fix the pattern)"

    def to_dict(self) -> dict:
        return {
            "kind": "pattern_disabled" if self.disabled else "pattern_timeouts",
            "owner": self.owner,
            "reason": self.disabled,
            "timeouts": self.timeouts,
            "seconds": round(self.seconds, 3),
            "evaluations": self.evaluations,
            "not_checked": self.not_checked,
            "message": self.message(),
        }


class PatternBreaker:
    """Per-run state: ``allows(owner)`` before each search, ``spent``/``timed_out`` after."""

    def __init__(
        self,
        *,
        max_timeouts: int = MAX_TIMEOUTS,
        grace_s: float = SLOW_GRACE_S,
        mean_s: float = SLOW_MEAN_S,
        timeout_s: float = 0.0,
    ):
        self.max_timeouts = max_timeouts
        self.grace_s = grace_s
        self.mean_s = mean_s
        self.timeout_s = timeout_s
        self._state: dict[str, PatternTrouble] = {}

    def _of(self, owner: str) -> PatternTrouble:
        state = self._state.get(owner)
        if state is None:
            state = self._state[owner] = PatternTrouble(owner, timeout_s=self.timeout_s)
        return state

    def is_disabled(self, owner: str) -> bool:
        state = self._state.get(owner)
        return state is not None and state.disabled is not None

    def allows(self, owner: str) -> bool:
        """Whether ``owner`` may be evaluated now; a refusal counts as one unchecked field."""
        state = self._state.get(owner)
        if state is None or state.disabled is None:
            return True
        state.not_checked += 1
        return False

    def timed_out(self, owner: str) -> None:
        state = self._of(owner)
        state.timeouts += 1
        if state.disabled is None and state.timeouts >= self.max_timeouts:
            state.disabled = "timeouts"

    def spent(self, owner: str, seconds: float) -> None:
        """One evaluation of ``owner`` took ``seconds`` of CPU time."""
        state = self._of(owner)
        state.seconds += seconds
        state.evaluations += 1
        if state.disabled is None and state.seconds > self.grace_s + self.mean_s * state.evaluations:
            state.disabled = "slow"

    def troubles(self) -> list[PatternTrouble]:
        """Owners that timed out or were disabled, in the order they first ran."""
        return [s for s in self._state.values() if s.timeouts or s.disabled]
