"""Cost of a whole audit against its own relevance pass (issue "The full-library audit near its
physical limit": every built-in probe <= 8x the relevance pass, the default audit <= 4x).

One small detector (`auditor.demo.train.train_classifier`, width 8, 2 epochs on 800 images of
`auditor.demo.scenario.make_counterfeit_data` at 48 x 48, seed 0), pt2 MLflow model; 400 labelled
reference and 400 unlabelled production 48 x 48 samples (`.npz`). Two audits in one process,
`auditor.audit.pipeline.run_checks` with an artifact dir (subclasses and galleries included):

* `default`: the default config (probe `grayscale`);
* `full_library`: every built-in probe (`PROBES.names()` without plug-ins; `patch_occlusion`
  scans its 4 x 4 grid).

The figure of each is the audit's wall time over its own `relevance_pass` stage (the same run,
so load on a shared machine hits both alike), with the stage timings beside it, after one
warm-up audit (first calls, imports). One torch and one FAISS thread.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import mlflow
import numpy as np
import torch

from auditor.audit.pipeline import run_checks
from auditor.checks.probes import base as probe_base
from auditor.config import AuditConfig
from auditor.demo.run import save_npz
from auditor.demo.scenario import make_counterfeit_data
from auditor.demo.train import MEAN, STD, train_classifier

N, SIZE, TRAIN, EPOCHS, SEED = 800, 48, 800, 2, 0
BUILT_IN_PROBES = (
    "grayscale", "blur", "high_pass_removal", "high_pass_only", "jpeg", "border_mask",
    "brightness_contrast", "patch_occlusion",
)
TARGETS = {"full_library": 8.0, "default": 4.0}
COMMAND = ".venv/bin/python -m benchmarks.run audit_cost"


def prepare(root: Path) -> Path:
    """Train and save the detector, write the two sample sets; return the model dir."""
    images, labels = make_counterfeit_data(TRAIN, colour_shortcut=True, seed=SEED, size=SIZE)
    model = train_classifier(images, labels, seed=SEED, epochs=EPOCHS)
    model_dir = root / "model"
    example = np.zeros((2, 3, SIZE, SIZE), np.float32)
    mlflow.pytorch.save_model(model, str(model_dir), input_example=example)
    images, labels = make_counterfeit_data(N, colour_shortcut=True, seed=SEED + 1, size=SIZE)
    save_npz(root / "reference.npz", images[: N // 2], labels[: N // 2], "ref")
    save_npz(root / "production.npz", images[N // 2 :], None, "prod")
    return model_dir


def config(root: Path, model_dir: Path, name: str, probes: list[str] | None) -> AuditConfig:
    raw: dict[str, Any] = {
        "model": {"uri": str(model_dir)},
        "samples": [
            {"name": "reference", "uri": str(root / "reference.npz"), "role": "reference"},
            {"name": "production", "uri": str(root / "production.npz"), "role": "production"},
        ],
        "artifacts_dir": str(root / f"artifacts-{name}"),
        "preprocess": {"mean": list(MEAN), "std": list(STD)},
        "store_url": f"sqlite:///{root / 'auditor.db'}",
        "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
    }
    if probes is not None:
        raw["probes"] = {"names": probes, "non_semantic": ["grayscale"]}
    return AuditConfig.model_validate(raw)


def _one(audit_config: AuditConfig, artifacts: Path) -> dict[str, Any]:
    start = time.perf_counter()
    result = run_checks(audit_config, artifacts).result
    seconds = time.perf_counter() - start
    timings = result.timings
    return {
        "seconds": round(seconds, 2),
        "ratio": round(seconds / timings["relevance_pass"], 2),
        "stages_s": timings,
        "findings": sorted((f.kind, f.probe or "") for f in result.findings),
    }


def audit_cost() -> dict[str, Any]:
    threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    probes = [p for p in BUILT_IN_PROBES if p in probe_base.PROBES]
    try:
        with tempfile.TemporaryDirectory(prefix="audit-cost-") as tmp:
            root = Path(tmp)
            model_dir = prepare(root)
            _one(config(root, model_dir, "warm-up", None), root / "artifacts-warm-up" / "audit-1")
            runs = {
                name: _one(config(root, model_dir, name, chosen), root / f"artifacts-{name}" / "audit-1")
                for name, chosen in (("default", None), ("full_library", probes))
            }
    finally:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(faiss_threads)
    return {
        "command": COMMAND,
        "setup": f"SmallResNet width 8, {EPOCHS} epochs on {TRAIN} {SIZE}x{SIZE} images; "
        f"{N // 2} labelled reference + {N // 2} unlabelled production samples; run_checks with "
        "an artifact dir (subclasses, galleries); 1 torch + 1 FAISS thread; wall seconds, one "
        "run each; ratio = audit / its own relevance_pass stage",
        "probes_full_library": probes,
        **{f"{name}_ratio": run["ratio"] for name, run in runs.items()},
        "targets": TARGETS,
        "runs": runs,
    }
