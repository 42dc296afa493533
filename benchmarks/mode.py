"""The benchmarks' size: quick by default (`make bench`, minutes on 2 cores), full with
`BENCH_FULL=1` (`make bench FULL=1`: the issue-sized problems, long)."""

from __future__ import annotations

import os


def full() -> bool:
    return os.environ.get("BENCH_FULL") == "1"


def prefix() -> str:
    """The environment prefix of a benchmark's command in this mode."""
    return "BENCH_FULL=1 " if full() else ""
