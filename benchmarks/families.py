"""Cost of per-channel relevance on every family of the conformance zoo (`tests/families`):
per-channel LRP (composite `epsilon_plus`, the engine bound once as the audit's worker holds it)
and SRD at the family's default layer, each against a plain forward + backward of the predicted logit to that layer's output
(the trunk without gradients, the head with them, as the relevance pass runs).

Batch 64 of 32x32 inputs, float32, one thread. Per family, in a fresh subprocess whose glibc
returns freed tensors to the system (`MALLOC_MMAP_THRESHOLD_=65536`): time as the median
process CPU time of `REPEATS` interleaved calls after `WARMUP`; peak memory as the growth of
the resident set's high-water mark over one call (`/proc/self/clear_refs`, `VmHWM`), case by
case. A method the family refuses up front is reported as `refused`.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from auditor.errors import RelevanceError
from auditor.model.graph import ModelGraph
from auditor.relevance import channel_scores
from auditor.relevance.lrp import LRPMethod
from auditor.relevance.srd import SRD
from benchmarks.timing import median_seconds, status_kib

BATCH, SIZE = 64, 32
WARMUP, REPEATS = 1, 5
COMMAND = ".venv/bin/python -m benchmarks.run family_costs"


def _cases(name: str) -> dict[str, Callable[[], object] | str]:
    from tests.families import FAMILIES, pair

    torch.set_num_threads(1)
    model, _ = pair(name)
    x = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    graph = ModelGraph.from_module(model, x[:2])
    layer = FAMILIES[name].layer
    split = graph.split(layer)

    def gradient() -> torch.Tensor:
        with torch.no_grad():
            activation = split.trunk(x)
        activation.requires_grad_(True)
        logits = split.head(activation)
        target = logits.argmax(dim=1, keepdim=True)
        return torch.autograd.grad(logits.gather(1, target).sum(), activation)[0]

    cases: dict[str, Callable[[], object] | str] = {
        "gradient": gradient,
    }
    lrp = LRPMethod(graph, composite="epsilon_plus")
    cases["lrp"] = lambda: channel_scores(lrp.attribute(x, layer=layer))
    try:
        srd = SRD(graph)
        cases["srd"] = lambda: channel_scores(srd.attribute(x, layer=layer))
    except RelevanceError as refused:
        cases["srd"] = f"refused: {refused}"
    return cases


def _measure(name: str) -> dict[str, Any]:
    """Median CPU seconds and peak RSS growth (MiB) of each case of family `name`."""
    cases = _cases(name)
    runs = {case: run for case, run in cases.items() if callable(run)}
    seconds = median_seconds(runs, warmup=WARMUP, repeats=REPEATS)
    peaks = {}
    for case, run in runs.items():
        gc.collect()
        before = status_kib("VmRSS:")
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark VmHWM
        run()
        peaks[case] = (status_kib("VmHWM:") - before) / 1024
    row: dict[str, Any] = {}
    for case in ("lrp", "srd"):
        if not callable(cases[case]):
            row[case] = cases[case]
            continue
        row[case] = {
            "time_ratio": round(seconds[case]["cpu"] / seconds["gradient"]["cpu"], 3),
            "peak_memory_ratio": (
                round(peaks[case] / peaks["gradient"], 3) if peaks["gradient"] >= 1 else None
            ),  # None: the baseline's peak is below the 1 MiB that RSS resolves here
            "cpu_s": round(seconds[case]["cpu"], 4),
            "peak_mib": round(peaks[case], 1),
        }
    row["gradient"] = {
        "cpu_s": round(seconds["gradient"]["cpu"], 4),
        "peak_mib": round(peaks["gradient"], 1),
    }
    return row


def family_costs() -> dict[str, Any]:
    """One row per family: LRP and SRD time and peak memory over forward + backward."""
    from tests.families import FAMILIES

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    rows = {}
    for name in FAMILIES:
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.families", name],
            capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent, env=env,
        )  # fmt: skip
        rows[name] = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "setup": f"tests/families models, batch {BATCH}, {SIZE}x{SIZE}, float32, 1 thread, the "
        f"family's default layer; time: median CPU time of {REPEATS} interleaved calls after "
        f"{WARMUP} warm-up; memory: peak RSS growth over one call, in one fresh process per family",
        "command": COMMAND,
        "families": rows,
    }


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1])))
