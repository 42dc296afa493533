"""Cost of per-channel LRP relevance (issue "The relevance engine": time <= 1.3x and peak
memory <= 2x a plain forward + autograd backward to the same layer's output).

Model: `auditor.model.zoo.SmallResNet(width=32, blocks=(2, 2, 2, 2))` (ResNet-18 layout: 4 stages of
2 basic blocks, 32..256 channels), 64 x 64 inputs, batch 32, float32, one CPU thread; layer:
the model's default layer (output of the last residual stage, `layer4`); composite
`epsilon_plus`; the class explained is the predicted one.

* `lrp` is the public API: `channel_relevance(graph, x, layer=...)` (it also splits the graph
  and folds BatchNorm on every call): trunk without gradients, LRP through the head.
* `gradient` is the plain alternative: the eager module, parameters frozen, a forward hook
  making the layer output require grad, `torch.autograd.grad(logit, layer output)`.

Time: median over `REPEATS` calls after `WARMUP`, the cases interleaved in one process. The
ratio is of process CPU time (one thread, so CPU time is compute time): the machine is shared,
and wall time there also counts waiting for a core; wall times are reported beside it.

Peak memory: peak resident set size growth over one call after a warm-up call, in a fresh
subprocess per case whose glibc returns freed tensors to the system
(`MALLOC_MMAP_THRESHOLD_=65536`), read as `VmHWM - VmRSS` from `/proc/self/status` after
resetting the high-water mark (`/proc/self/clear_refs`, Linux).

The same figures at the input (`explain(..., reduce=False)` vs the input gradient) are reported
for information; they have no target.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from auditor.model.graph import ModelGraph
from auditor.model.zoo import SmallResNet
from auditor.relevance import channel_relevance, explain
from benchmarks.timing import median_seconds, status_kib

BATCH, SIZE, WIDTH, BLOCKS, CLASSES = 32, 64, 32, (2, 2, 2, 2), 10
COMPOSITE = "epsilon_plus"
WARMUP, REPEATS = 2, 9
TIME_TARGET, MEMORY_TARGET = 1.3, 2.0
COMMAND = ".venv/bin/python -m benchmarks.run lrp_channel_relevance"


@dataclass(frozen=True)
class Setup:
    model: nn.Module
    graph: ModelGraph
    layer: str
    inputs: torch.Tensor


def _setup() -> Setup:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SmallResNet(num_classes=CLASSES, width=WIDTH, blocks=BLOCKS).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    inputs = torch.rand(BATCH, 3, SIZE, SIZE)
    graph = ModelGraph.from_module(model, inputs[:2])
    return Setup(model, graph, graph.default_layer(), inputs)


def _gradient(s: Setup, layer: str | None) -> Callable[[], torch.Tensor]:
    """Forward + backward of the predicted logit to the output of `layer` (None: the input)."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        captured["at"] = output.requires_grad_(True)

    if layer is not None:
        s.model.get_submodule(layer).register_forward_hook(keep)

    def run() -> torch.Tensor:
        x = s.inputs if layer is not None else s.inputs.clone().requires_grad_(True)
        logits = s.model(x)
        target = logits.argmax(dim=1, keepdim=True)
        at = captured["at"] if layer is not None else x
        return torch.autograd.grad(logits.gather(1, target).sum(), at)[0]

    return run


CASES: dict[str, Callable[[Setup], Callable[[], torch.Tensor]]] = {
    "lrp_layer": lambda s: (
        lambda: channel_relevance(s.graph, s.inputs, layer=s.layer, composite=COMPOSITE)
    ),
    "gradient_layer": lambda s: _gradient(s, s.layer),
    "lrp_input": lambda s: (
        lambda: explain(s.graph, s.inputs, method="lrp", reduce=False, composite=COMPOSITE)
    ),
    "gradient_input": lambda s: _gradient(s, None),
}


def peak_memory_mib(case: str) -> float:
    """Peak resident memory growth (MiB) over one call of `case` after a warm-up call."""
    run = CASES[case](_setup())
    run()
    gc.collect()
    before = status_kib("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark VmHWM
    run()
    return (status_kib("VmHWM:") - before) / 1024


def _peak_in_subprocess(case: str) -> float:
    """`peak_memory_mib(case)` in a fresh process whose glibc returns every freed tensor to the
    system (mmap threshold 64 KiB), so that the high-water mark is the call's true peak."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.relevance", case],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
        env=env,
    )
    return float(result.stdout.strip().splitlines()[-1])


def _figures(where: str, seconds: dict[str, dict[str, float]], target: bool) -> dict[str, Any]:
    lrp_s, gradient_s = seconds[f"lrp_{where}"], seconds[f"gradient_{where}"]
    lrp_mib = _peak_in_subprocess(f"lrp_{where}")
    gradient_mib = _peak_in_subprocess(f"gradient_{where}")
    time_ratio, memory_ratio = lrp_s["cpu"] / gradient_s["cpu"], lrp_mib / gradient_mib
    figures = {
        "time_ratio": {
            "value": round(time_ratio, 3),
            "lrp_cpu_s": round(lrp_s["cpu"], 4),
            "gradient_cpu_s": round(gradient_s["cpu"], 4),
            "wall_ratio": round(lrp_s["wall"] / gradient_s["wall"], 3),
            "lrp_wall_s": round(lrp_s["wall"], 4),
            "gradient_wall_s": round(gradient_s["wall"], 4),
            "command": COMMAND,
        },
        "peak_memory_ratio": {
            "value": round(memory_ratio, 3),
            "lrp_mib": round(lrp_mib, 1),
            "gradient_mib": round(gradient_mib, 1),
            "command": f"{COMMAND}  (one call per case: .venv/bin/python -m benchmarks.relevance "
            f"lrp_{where} | gradient_{where})",
        },
    }
    if target:
        figures["time_ratio"] |= {"target": TIME_TARGET, "met": time_ratio <= TIME_TARGET}
        memory_met = memory_ratio <= MEMORY_TARGET
        figures["peak_memory_ratio"] |= {"target": MEMORY_TARGET, "met": memory_met}
    return figures


def lrp_channel_relevance() -> dict[str, Any]:
    """Time and peak-memory ratios of LRP to a plain gradient, at the layer and at the input."""
    s = _setup()
    seconds = median_seconds(
        {name: make(s) for name, make in CASES.items()}, warmup=WARMUP, repeats=REPEATS
    )
    return {
        "setup": f"SmallResNet(width={WIDTH}, blocks={BLOCKS}), {SIZE}x{SIZE} inputs, batch "
        f"{BATCH}, float32, {torch.get_num_threads()} thread, layer {s.layer}, composite "
        f"{COMPOSITE}; time: median process CPU time (and wall time) of {REPEATS} interleaved "
        f"calls after {WARMUP} warm-up; memory: peak RSS growth over one call in a fresh process",
        "layer": _figures("layer", seconds, target=True),
        "input": _figures("input", seconds, target=False),
    }


if __name__ == "__main__":
    print(json.dumps(peak_memory_mib(sys.argv[1])))
