"""Shared output helpers for commands: stderr console, progress bar, JSON summaries."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr = Console(stderr=True, highlight=False)


def emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class _RateColumn(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # noqa: D401 - rich API
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "  -/s", style="progress.data.speed")


@contextmanager
def progress_bar(description: str, *, quiet: bool) -> Iterator[Any]:
    """A callback ``(event, n)`` feeding a rich bar; the total grows as sources are listed.

    The bar appears with the first event, so a command that fails before doing any work
    (no index, a bad policy) prints its one-line error and nothing else."""
    if quiet:
        yield lambda event, n: None
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
    )
    tasks: list[Any] = []

    def update(event: str, n: int) -> None:
        if not tasks:
            bar.start()
            tasks.append(bar.add_task(description, total=0))
        task = tasks[0]
        if event == "listed":
            bar.update(task, total=(bar.tasks[0].total or 0) + n)
        elif event == "done":
            bar.advance(task, n)
        elif event == "total":
            bar.update(task, total=n)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


def warn_run_problems(stage: str, problems: list[dict[str, Any]]) -> None:
    """Problems of a run (a policy rule disabled after timeouts): one line each on stderr,
    also with --quiet, since they are not progress but something a person must fix."""
    for problem in problems:
        message = str(problem.get("message") or problem).splitlines()[0]
        print(f"audit: warning: {stage}: {message}", file=sys.stderr, flush=True)


def pretrained_tag(value: str) -> str | None:
    """``--pretrained`` as given, or None for random weights ('none', 'random' or empty)."""
    return None if value.strip().lower() in ("", "none", "random") else value
