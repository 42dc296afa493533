"""End-to-end audit time and peak memory against the number of samples (issue "Scale").

One small detector (`auditor.demo.train.train_classifier`, width 8, 2 epochs on 1 000 images
of `auditor.demo.scenario.make_counterfeit_data`, seed 0) saved with `mlflow.pytorch.save_model`
(pt2 format); for each N in 1k, 2k, 4k, 8k, an audit over N 64 x 64 samples: N / 2 labelled
reference samples and N / 2 unlabelled production samples (`.npz`, seed 1, the first N / 2 of
each pool, so the sets grow by inclusion).

The audit is `auditor.audit.pipeline.run_checks(config, artifact_dir)`: what `run_audit` runs apart
from the store, i.e. `auditor.audit.pipeline.audit` plus the subclass check and the channel galleries
(which `audit` skips without an artifact dir). The config keeps every default, those two stages
included (subclasses: cosine, cluster_samples 5 000, index auto with threshold 50 000, so flat
here, PCA map; galleries: all flagged channels, 8 samples each, 128 px tiles); `audit_s`
subtracts their stage timings, which is what `audit(config)` costs.

Each N runs in a fresh child process with one torch and one FAISS thread: wall time of one
audit, and peak memory as `VmHWM` at its end minus `VmRSS` after the imports.
The fitted exponent is the least-squares slope of log time on log N.

`streaming_memory` runs the same audit over 2 000 and 20 000 samples (the issue's bounded-memory
check) and reports the ratio of their peak RSS (`VmHWM`, the whole process).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import mlflow
import numpy as np
import torch

from auditor.audit.pipeline import run_checks
from auditor.config import AuditConfig
from auditor.demo.run import save_npz
from auditor.demo.scenario import make_counterfeit_data
from auditor.demo.train import MEAN, STD, train_classifier
from auditor.execution import progress
from benchmarks import mode
from benchmarks.timing import status_kib

SIZES = (1_000, 2_000, 4_000, 8_000)
QUICK_SIZES = (1_000, 2_000, 4_000)
TRAIN, EPOCHS, SEED = 1_000, 2, 0
EXTRA_STAGES = ("subclasses", "gallery")
ROOT = Path(__file__).resolve().parents[1]
COMMAND = ".venv/bin/python -m benchmarks.run audit_scaling"


def prepare(root: Path, sizes: tuple[int, ...]) -> Path:
    """Train and save the detector and write the sample pools; return the model dir."""
    images, labels = make_counterfeit_data(TRAIN, colour_shortcut=True, seed=SEED)
    model = train_classifier(images, labels, seed=SEED, epochs=EPOCHS)
    model_dir = root / "model"
    mlflow.pytorch.save_model(model, str(model_dir), input_example=np.zeros((2, 3, 64, 64), np.float32))
    half = max(sizes) // 2
    images, labels = make_counterfeit_data(2 * half, colour_shortcut=True, seed=SEED + 1)
    for n in sizes:
        save_npz(root / f"reference-{n}.npz", images[: n // 2], labels[: n // 2], "ref")
        save_npz(root / f"production-{n}.npz", images[half : half + n // 2], None, "prod")
    return model_dir


def config(root: Path, model_dir: Path, n: int) -> dict[str, Any]:
    """The default audit config over the N-sample sets (as a user writes it in audit.yaml)."""
    return {
        "model": {"uri": str(model_dir)},
        "samples": [
            {"name": "reference", "uri": str(root / f"reference-{n}.npz"), "role": "reference"},
            {"name": "production", "uri": str(root / f"production-{n}.npz"), "role": "production"},
        ],
        "artifacts_dir": str(root / f"artifacts-{n}"),
        "preprocess": {"mean": list(MEAN), "std": list(STD)},
        "store_url": f"sqlite:///{root / 'auditor.db'}",
        "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
    }


def child(config_path: str) -> None:
    """Run one audit from a JSON config file; print its seconds, stage timings and peak memory."""
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    progress.enabled = False
    raw = json.loads(Path(config_path).read_text())
    audit_config = AuditConfig.model_validate(raw)
    baseline = status_kib("VmRSS:")
    start = time.perf_counter()
    result = run_checks(audit_config, Path(raw["artifacts_dir"]) / "audit-1").result
    seconds = time.perf_counter() - start
    peak = status_kib("VmHWM:")
    print(json.dumps({
        "seconds": seconds,
        "timings": result.timings,
        "baseline_mib": baseline / 1024,
        "peak_mib": peak / 1024,
        "peak_growth_mib": (peak - baseline) / 1024,
    }))


def slope(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope of log(values) on log(sizes)."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def run_audits(sizes: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    """One audit per N, each in a fresh child process; what `child` printed, per N."""
    with tempfile.TemporaryDirectory(prefix="audit-scaling-") as tmp:
        root = Path(tmp)
        model_dir = prepare(root, sizes)
        runs = {}
        for n in sizes:
            path = root / f"config-{n}.json"
            path.write_text(json.dumps(config(root, model_dir, n)))
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.scaling", str(path)],
                cwd=ROOT, check=True, capture_output=True, text=True,
            )
            runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
    return runs


def audit_scaling() -> dict[str, Any]:
    chosen = SIZES if mode.full() else QUICK_SIZES
    runs = run_audits(chosen)
    sizes = list(chosen)
    total = [runs[n]["seconds"] for n in sizes]
    plain = [runs[n]["seconds"] - sum(runs[n]["timings"].get(s, 0.0) for s in EXTRA_STAGES) for n in sizes]
    memory = [runs[n]["peak_growth_mib"] for n in sizes]
    return {
        "command": mode.prefix() + COMMAND,
        "setup": f"SmallResNet width 8 trained {EPOCHS} epochs on {TRAIN} images (seed {SEED}), "
        "pt2 MLflow model; N/2 labelled reference + N/2 unlabelled production 64x64 samples; "
        "default audit config (subclasses and galleries on); run_checks with an artifact dir; "
        "one fresh process per N, 1 torch + 1 FAISS thread; one run each, wall seconds",
        "samples": sizes,
        "total_s": [round(t, 2) for t in total],
        "audit_s": [round(t, 2) for t in plain],
        "stages_s": {n: runs[n]["timings"] for n in sizes},
        "time_exponent_total": round(slope(sizes, total), 3),
        "time_exponent_audit": round(slope(sizes, plain), 3),
        "peak_rss_mib": [round(runs[n]["peak_mib"], 1) for n in sizes],
        "peak_rss_growth_mib": [round(m, 1) for m in memory],
        "baseline_rss_mib": [round(runs[n]["baseline_mib"], 1) for n in sizes],
        "memory_exponent": round(slope(sizes, memory), 3),
    }


MEMORY_SIZES = (2_000, 20_000)
QUICK_MEMORY_SIZES = (1_000, 5_000)
MEMORY_COMMAND = ".venv/bin/python -m benchmarks.run streaming_memory"


def streaming_memory() -> dict[str, Any]:
    """Peak RSS of the same audit over 2 000 and 20 000 samples (target: ratio <= 1.3)."""
    sizes = MEMORY_SIZES if mode.full() else QUICK_MEMORY_SIZES
    runs = run_audits(sizes)
    small, large = (runs[n] for n in sizes)
    return {
        "command": mode.prefix() + MEMORY_COMMAND,
        "setup": f"as audit_scaling, N = {sizes[0]} and {sizes[1]} (64x64 images, .npz on disk), "
        "local executor streaming batches of 64",
        "samples": list(sizes),
        "peak_rss_mib": [round(r["peak_mib"], 1) for r in (small, large)],
        "peak_rss_ratio": round(large["peak_mib"] / small["peak_mib"], 3),
        "seconds": [round(r["seconds"], 1) for r in (small, large)],
        "target_ratio": 1.3,
    }


if __name__ == "__main__":
    child(sys.argv[1])
