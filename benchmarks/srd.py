"""Cost of an SRD input-scale heatmap against one plain gradient ([Han2024], SRD-input).

The baseline is one forward and one backward to the input through the same canonized graph
(BatchNorm folded): what any gradient saliency map costs. Both run on a ResNet-style model
(`SmallResNet`, width 16, two blocks per stage), batch 32, 64 x 64 images, one CPU thread.

* time: median of `reps` runs after one warm-up, both in this process;
* peak memory: growth of the resident set over one run (after a warm-up run), each in a fresh
  child process with glibc's mmap threshold pinned low, so that freed tensors go back to the
  system and `VmHWM` (reset through `/proc/self/clear_refs`) is the run's true peak. Linux only.

`python -m benchmarks.srd` prints the figures as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from auditor.model.graph import ModelGraph
from auditor.model.zoo import SmallResNet
from auditor.relevance.srd import SRD
from benchmarks.timing import median_seconds, status_kib

BATCH, SIZE, REPS = 32, 64, 7
ROOT = Path(__file__).resolve().parents[1]


def _setup(batch: int, size: int) -> tuple[SRD, torch.Tensor]:
    torch.manual_seed(0)
    model = SmallResNet(num_classes=10, width=16, blocks=(2, 2, 2)).eval()
    inputs = torch.randn(batch, 3, size, size)
    return SRD(ModelGraph.from_module(model, inputs[:2])), inputs


def _gradient(srd: SRD, inputs: torch.Tensor) -> torch.Tensor:
    """Forward + backward to the input for the predicted classes."""
    x = inputs.detach().requires_grad_(True)
    logits = srd.gm(x)
    (grad,) = torch.autograd.grad(logits.max(dim=1).values.sum(), x)
    return grad


def _heatmap(srd: SRD, inputs: torch.Tensor) -> torch.Tensor:
    """SRD-input: the per-position relevance at the input, N x H x W."""
    return srd.attribute(inputs).sum(dim=1)


VARIANTS: dict[str, Callable[[SRD, torch.Tensor], torch.Tensor]] = {
    "srd": _heatmap,
    "gradient": _gradient,
}


def _peak_growth_bytes(variant: str, batch: int, size: int) -> int:
    """In this process: resident-set peak over one run of `variant`, above the set before it."""
    torch.set_num_threads(1)
    srd, inputs = _setup(batch, size)
    run = VARIANTS[variant]
    run(srd, inputs)
    before = status_kib("VmRSS:")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current resident set
    run(srd, inputs)
    return (status_kib("VmHWM:") - before) * 1024


def _peak_in_child(variant: str, batch: int, size: int) -> int:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    code = f"from benchmarks.srd import _peak_growth_bytes; print(_peak_growth_bytes({variant!r}, {batch}, {size}))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def bench_srd(batch: int = BATCH, size: int = SIZE, reps: int = REPS) -> dict:
    """Time and peak-memory ratios of an SRD input heatmap to a plain gradient (targets: time
    ratio <= 3, memory ratio <= 2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        srd, inputs = _setup(batch, size)
        timed = median_seconds(
            {name: (lambda fn=fn: fn(srd, inputs)) for name, fn in VARIANTS.items()},
            warmup=1, repeats=reps,
        )
        seconds = {name: t["wall"] for name, t in timed.items()}
    finally:
        torch.set_num_threads(threads)
    peak = {name: _peak_in_child(name, batch, size) for name in VARIANTS}
    return {
        "model": "SmallResNet(width=16, blocks=(2, 2, 2)), BatchNorm folded",
        "batch": batch,
        "size": size,
        "threads": 1,
        "reps": reps,
        "srd_s": round(seconds["srd"], 4),
        "gradient_s": round(seconds["gradient"], 4),
        "time_ratio": round(seconds["srd"] / seconds["gradient"], 3),
        "srd_peak_mib": round(peak["srd"] / 2**20, 1),
        "gradient_peak_mib": round(peak["gradient"] / 2**20, 1),
        "memory_ratio": round(peak["srd"] / peak["gradient"], 3),
    }


if __name__ == "__main__":
    print(json.dumps(bench_srd(), indent=2))
