"""Registering the session's trained scenario models on the real MLflow tracking server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking (and registry) URI at `uri` for the block, restoring
    the previous state exactly (also "unset"), which the public API cannot do."""
    with _use_tracking_uri(uri):
        yield


def register(
    tracking_uri: str, model: torch.nn.Module, name: str, *, alias: str | None = None
) -> str:
    """Log `model` (default pt2 format) in a new run and register it as a new version of
    `name`; point `alias` at that version if given. Returns the version number."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"train-{name}")
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(f"train-{name}")
    )
    with global_tracking_uri(tracking_uri), mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=np.zeros((2, 3, 64, 64), np.float32),
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    if alias is not None:
        client.set_registered_model_alias(name, alias, version)
    return version
