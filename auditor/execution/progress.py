"""Progress bars for the long passes of an audit (rich, on stderr, off when not wanted): count,
rate and time remaining."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
_console = Console(stderr=True)
enabled = True


def _bar(unit: str) -> Progress:
    return Progress(  # fits 80 columns (a log file, a CI console)
        TextColumn("{task.description:<25.25}"),
        BarColumn(bar_width=8),
        MofNCompleteColumn(),
        TextColumn(unit),
        TextColumn("{task.fields[rate]}"),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=_console,
        transient=False,
    )


def _rate(task_speed: float | None) -> str:
    return f"{task_speed:,.0f}/s" if task_speed else "-/s"


@contextmanager
def sample_bar(description: str, total: int, unit: str = "samples") -> Iterator[Callable[[int], None]]:
    """A bar over `total` items; yields `advance(n)` (a no-op when not `enabled`)."""
    if not enabled:
        yield lambda _n: None
        return
    with _bar(unit) as bar:
        task = bar.add_task(description, total=total, rate=_rate(None))

        def advance(n: int) -> None:
            bar.advance(task, n)
            bar.update(task, rate=_rate(bar.tasks[task].speed))

        yield advance


def track(items: Iterable[T], description: str, total: int, unit: str = "steps") -> Iterator[T]:
    """Iterate over `items` showing a bar with count, rate and ETA (when `enabled`)."""
    with sample_bar(description, total, unit) as advance:
        for item in items:
            yield item
            advance(1)
