"""Progress bars for the long passes of an audit (rich, on stderr, off when not wanted)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")
_console = Console(stderr=True)
enabled = True


def track(items: Iterable[T], description: str, total: int) -> Iterator[T]:
    """Iterate over `items` showing a bar with count, rate and ETA (when `enabled`)."""
    if not enabled:
        yield from items
        return
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("batches"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
