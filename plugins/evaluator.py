"""`relevance-auditor`: an MLflow model evaluator that audits an image classifier for shortcut
strategies (entry point `mlflow.model_evaluator`, see pyproject.toml).

MLflow rejects 4-D image arrays as evaluation data, so the data is a DataFrame with a column of
image paths or URIs (local paths, `file:`, `runs:/`, `mlflow-artifacts:/`; PNG / JPEG) and the
label column named by `targets` (class indices; missing = unknown)::

    mlflow.models.evaluate(
        "models:/counterfeit-detector/3",
        data=pd.DataFrame({"image": paths, "label": labels}),
        targets="label",
        model_type="classifier",
        evaluators=["relevance-auditor"],
        evaluator_config={"relevance-auditor": {"preprocess": {"mean": [0.5] * 3, "std": [0.5] * 3}}},
    )

`evaluator_config` takes the sections of an audit config (`model` without `uri`, `preprocess`,
`relevance`, `channels`, `dropout`, `probes`, `thresholds`, `subclasses`, `gallery`, `drift`,
`alerts`, `store_url`, `artifacts_dir`, `batch_size`, `seed`), plus `image_column` (default
"image"), `model_uri` (default: the evaluated model, as `models:/<logged model id>`) and
`metric_prefix`. The audit runs and is stored like any audit (`auditor.audit.lifecycle.run_audit`:
in `store_url`, default `$AUDITOR_DB_URL`, else `.auditor/auditor.db`; drift against the model's
previous audit, alerts, retention); it logs the metrics of `auditor.tracking.run_log` on the
evaluation run, linked to the evaluated model and dataset, and its report and tables under
`relevance_audit/` (with the HTML report, `findings.html`); the `EvaluationResult` carries the same metrics and artefacts, and the
evaluation run is tagged `auditor.audit_id` with the stored audit's id.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.models.evaluation import EvaluationResult, ModelEvaluator
from mlflow.models.evaluation.artifacts import (
    CsvEvaluationArtifact,
    JsonEvaluationArtifact,
    TextEvaluationArtifact,
)
from mlflow.models.evaluation.base import EvaluationArtifact
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from auditor.artefacts.report import build_report
from auditor.audit.lifecycle import run_audit
from auditor.config import AuditConfig
from auditor.data.images import FileImages
from auditor.errors import ConfigError, SampleError
from auditor.logs import configure_logging
from auditor.tracking.resolve import download_samples
from auditor.tracking.run_log import audit_metrics, write_artifacts

ARTIFACT_DIR = "relevance_audit"
AUDIT_ID_TAG = "auditor.audit_id"  # the tag `auditor.tracking.run_log` gives audit runs
SET_BY_THE_EVALUATOR = ("samples", "tracking_uri", "mlflow_logging")
ARTIFACT_TYPES: dict[str, type[EvaluationArtifact]] = {
    ".json": JsonEvaluationArtifact,
    ".csv": CsvEvaluationArtifact,
    ".yaml": TextEvaluationArtifact,
    ".html": TextEvaluationArtifact,
}
CONFIG_FIX = (
    "see the evaluator_config keys in plugins/evaluator.py and the config format in README.md"
)


class RelevanceAuditEvaluator(ModelEvaluator):
    """Runs the relevance audit of a classifier on the evaluation data."""

    @classmethod
    def can_evaluate(cls, *, model_type: str | None, evaluator_config: dict, **kwargs: Any) -> bool:
        return model_type == "classifier"

    def evaluate(
        self,
        *,
        model_type: str,
        dataset: Any,
        run_id: str,
        evaluator_config: dict,
        model: Any = None,
        **kwargs: Any,
    ) -> EvaluationResult:
        configure_logging()  # the auditor's warnings, though mlflow.pytorch silenced the root
        settings = dict(evaluator_config)
        image_column = settings.pop("image_column", "image")
        prefix = settings.pop("metric_prefix", "")
        settings.pop("col_mapping", None)  # consumed by mlflow.models.evaluate
        model_id = _logged_model_id(model, kwargs.get("model_id"))
        model_uri = settings.pop("model_uri", None) or _evaluated_model_uri(model, model_id)
        tracking_uri = mlflow.get_tracking_uri()
        client = MlflowClient(tracking_uri)
        with tempfile.TemporaryDirectory(prefix="auditor-evaluate-") as tmp:
            sample_file = Path(tmp) / "evaluation.npz"
            config = evaluation_config(settings, model_uri, sample_file, tracking_uri)
            write_sample_file(
                dataset.features_data, dataset.labels_data, image_column, sample_file,
                size=config.preprocess.size, tracking_uri=tracking_uri,
            )  # fmt: skip
            outcome = run_audit(config)  # stored like any audit
            report = build_report(outcome.audit_id, outcome.result)
            metrics = {f"{prefix}{k}": v for k, v in audit_metrics(report).items()}
            files = write_artifacts(report, config, Path(tmp) / ARTIFACT_DIR, stored=True)
            client.log_batch(run_id, metrics=_metrics(metrics, model_id, dataset))
            client.set_tag(run_id, AUDIT_ID_TAG, str(outcome.audit_id))
            client.log_artifacts(run_id, str(Path(tmp) / ARTIFACT_DIR), ARTIFACT_DIR)
            artifact_root = client.get_run(run_id).info.artifact_uri
            artifacts = {
                f"{ARTIFACT_DIR}_{path.stem}": ARTIFACT_TYPES[path.suffix](
                    uri=f"{artifact_root}/{ARTIFACT_DIR}/{path.name}", content=_content(path)
                )
                for path in files
            }
        return EvaluationResult(metrics=metrics, artifacts=artifacts, run_id=run_id)


def evaluation_config(
    settings: dict[str, Any], model_uri: str, sample_file: Path, tracking_uri: str
) -> AuditConfig:
    """The audit config of an evaluation: `settings` (audit config sections) applied to the
    evaluated model and the evaluation data."""
    taken = [key for key in SET_BY_THE_EVALUATOR if key in settings]
    if taken:
        raise ConfigError(
            f"evaluator_config sets {', '.join(taken)}, which the evaluator fills in itself",
            "remove them: the samples are the data passed to mlflow.models.evaluate, its run holds the metrics",
        )
    raw = {
        **settings,
        "model": {**settings.get("model", {}), "uri": model_uri},
        "samples": [{"name": "evaluation", "uri": str(sample_file)}],
        "tracking_uri": tracking_uri,
    }
    try:
        return AuditConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"evaluator_config: {field}: {first['msg']}", CONFIG_FIX) from None


def write_sample_file(
    features: pd.DataFrame,
    labels: Any,
    image_column: str,
    path: Path,
    *,
    size: tuple[int, int] | None,
    tracking_uri: str,
) -> Path:
    """Read the images named in `features[image_column]` with the folder audits' reader
    (`auditor.data.images.FileImages`: resized to `size` (height, width) if given) and write
    them, float32 N x 3 x H x W in [0, 1], with their labels as an `.npz` sample file at `path`."""
    if image_column not in features.columns:
        raise ConfigError(
            f"evaluation data has no column {image_column!r} (columns: {list(features.columns)})",
            'name the column of image paths with evaluator_config={"image_column": ...}',
        )
    uris = [str(uri) for uri in features[image_column]]
    with tempfile.TemporaryDirectory(prefix="auditor-images-", dir=path.parent) as tmp:
        files = [
            download_samples(uri, tracking_uri=tracking_uri, into=Path(tmp) / str(i))
            for i, uri in enumerate(uris)
        ]
        source = FileImages(files, origin=f"the evaluation data's column {image_column!r}", size=size)
        images = source.read(np.arange(len(source)))
    np.savez(
        path,
        images=images,
        labels=_class_indices(labels, len(uris)),
        ids=np.array([f"{i}:{uri}" for i, uri in enumerate(uris)]),
    )
    return path


def _class_indices(labels: Any, n: int) -> np.ndarray:
    """Labels as int64 class indices; missing labels (None / NaN) become -1 (unknown)."""
    if labels is None:
        return np.full(n, -1, dtype=np.int64)
    raw = pd.Series(np.asarray(labels))
    values = pd.to_numeric(raw, errors="coerce")  # anything but a number becomes NaN
    known = values.notna()
    invalid = (raw.notna() & ~known) | (known & ((values < 0) | (values % 1 != 0)))
    if invalid.any():
        raise SampleError(
            f"the label column holds {raw[invalid].iloc[0]!r}, which is not a class index",
            "use integer class indices 0, 1, ... (leave unknown labels empty)",
        )
    return values.fillna(-1).astype(np.int64).to_numpy()


def _logged_model_id(model: Any, model_id: str | None) -> str | None:
    """The MLflow 3 logged model that `mlflow.models.evaluate` loaded (None if unknown)."""
    meta = getattr(model, "metadata", None)
    return model_id or getattr(model, "model_id", None) or getattr(meta, "model_id", None)


def _evaluated_model_uri(model: Any, model_id: str | None) -> str:
    """The URI of the evaluated model, for the auditor to load it again (as an aten graph,
    not through pyfunc): its logged model, else its run and path."""
    if model_id:
        return f"models:/{model_id}"
    meta = getattr(model, "metadata", None)
    if meta is not None and meta.run_id and meta.artifact_path and ":" not in meta.artifact_path:
        return f"runs:/{meta.run_id}/{meta.artifact_path}"
    raise ConfigError(
        "the evaluated model has no MLflow URI the relevance auditor can load",
        'pass evaluator_config={"model_uri": "models:/<name>/<version>"}',
    )


def _metrics(metrics: dict[str, float], model_id: str | None, dataset: Any) -> list[Metric]:
    """Metrics linked to the evaluated model and dataset, like MLflow's own evaluators."""
    now = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    return [
        Metric(
            key,
            value,
            now,
            0,
            model_id=model_id,
            dataset_name=dataset.name,
            dataset_digest=dataset.digest,
        )
        for key, value in metrics.items()
    ]


def _content(path: Path) -> Any:
    """An artefact's content as MLflow's artefact classes hold it."""
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return path.read_text()
