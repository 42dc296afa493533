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
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
_console = Console(stderr=True)
enabled = True


def _bar(unit: str) -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=_console,
        transient=False,
    )


def _rate(task_speed: float | None, unit: str) -> str:
    return f"{task_speed:,.0f} {unit}/s" if task_speed else f"- {unit}/s"


@contextmanager
def sample_bar(description: str, total: int, unit: str = "samples") -> Iterator[Callable[[int], None]]:
    """A bar over `total` items; yields `advance(n)` (a no-op when not `enabled`)."""
    if not enabled:
        yield lambda _n: None
        return
    with _bar(unit) as bar:
        task = bar.add_task(description, total=total, rate=_rate(None, unit))

        def advance(n: int) -> None:
            bar.advance(task, n)
            bar.update(task, rate=_rate(bar.tasks[task].speed, unit))

        yield advance


def track(items: Iterable[T], description: str, total: int, unit: str = "steps") -> Iterator[T]:
    """Iterate over `items` showing a bar with count, rate and ETA (when `enabled`)."""
    with sample_bar(description, total, unit) as advance:
        for item in items:
            yield item
            advance(1)
