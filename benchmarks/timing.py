"""Shared measuring helpers of the benchmarks: interleaved median timings in one process, and
peak resident memory from /proc (Linux)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path


def median_seconds(
    runs: dict[str, Callable[[], object]], *, warmup: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Median process CPU time and wall time of each run, the runs interleaved so that load on a
    shared machine hits them alike. With one torch thread, CPU time is compute time."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "wall": []} for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            cpu, wall = time.process_time(), time.perf_counter()
            run()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return {
        name: {clock: statistics.median(t) for clock, t in clocks.items()}
        for name, clocks in times.items()
    }


def status_kib(field: str) -> int:
    """A `/proc/self/status` field in KiB (`VmRSS:`, `VmHWM:`)."""
    line = next(
        li for li in Path("/proc/self/status").read_text().splitlines() if li.startswith(field)
    )
    return int(line.split()[1])
