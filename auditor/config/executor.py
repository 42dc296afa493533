"""Where the heavy passes run: this process or a Ray cluster."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from auditor.config.strict import StrictModel


class ExecutorSettings(StrictModel):
    """Where the heavy passes (predictions, activations, relevance, probes, dropout,
    embeddings) run: `local` streams batches in this process; `ray` maps them over the actors
    of a Ray cluster (optional extra `ray`; see README "Scale")."""

    kind: Literal["local", "ray"] = "local"
    address: str = Field(
        default="auto",
        description="ray: 'auto' (the cluster this machine belongs to, else a new local one), "
        "'local' (a new local cluster) or 'ray://host:10001'",
    )
    num_workers: int = Field(default=2, ge=1, description="ray: actors holding the model")
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0, description="ray: > 0 runs the model on GPU")
    batch_size: int | None = Field(
        default=None, ge=1, description="samples per batch of a pass (default: batch_size)"
    )
    scratch_dir: str | None = Field(
        default=None,
        description="where downloaded / extracted sample files live during the audit (default: "
        "the system's temporary folder); on a multi-node cluster, a folder every node reads",
    )
