"""`auditor demo`: a counterfeit detector with a colour shortcut, logged to a local MLflow store
and audited exactly as `auditor audit --config FILE` audits it [Chandrasegaran2022].

Everything lives under one folder (default `.auditor/`): the MLflow store (`mlflow.db` and
`artifacts/`), the findings database (`auditor.db`), the editable config (`demo-audit.yaml`)
and the report (`demo-report.json`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from rich.console import Console

from auditor.audit.lifecycle import run_audit
from auditor.audit.summary import print_summary
from auditor.config import AuditConfig, ModelSource, Preprocess, SampleSource
from auditor.demo.scenario import make_counterfeit_data
from auditor.demo.train import MEAN, STD, to_tensor, train_classifier

MODEL_NAME = "counterfeit-detector"
ALIAS = "production"
EXPERIMENT = "counterfeit-detector"


@dataclass(frozen=True)
class DemoSizes:
    """Sample counts of the demo: enough for a stable audit, small enough for 2 CPU cores."""

    train: int = 2000
    validation: int = 400
    production: int = 400


@dataclass(frozen=True)
class LoggedScenario:
    model_uri: str
    validation_uri: str
    production_uri: str


def save_npz(path: Path, images: np.ndarray, labels: np.ndarray | None, prefix: str) -> Path:
    """Write a sample set in the documented `.npz` format (uint8 N x H x W x 3, labels, ids)."""
    arrays = {"images": images, "ids": np.array([f"{prefix}-{i:05d}" for i in range(len(images))])}
    if labels is not None:
        arrays["labels"] = labels
        arrays["class_names"] = np.array(["real", "fake"])
    np.savez_compressed(path, **arrays)
    return path


def log_scenario(
    tracking_uri: str, artifact_root: Path, *, colour_shortcut: bool, seed: int,
    sizes: DemoSizes, model_name: str = MODEL_NAME, console: Console | None = None,
) -> LoggedScenario:
    """Generate data, train the detector, and log model and sample sets to MLflow: the model
    in MLflow's default (`torch.export`) format, registered with the alias `production`."""
    say = console.print if console else (lambda *_a, **_k: None)
    n_total = sizes.train + sizes.validation + sizes.production
    images, labels = make_counterfeit_data(n_total, colour_shortcut=colour_shortcut, seed=seed)
    train, val = slice(0, sizes.train), slice(sizes.train, sizes.train + sizes.validation)
    prod = slice(sizes.train + sizes.validation, n_total)
    say(f"training a small ResNet on {sizes.train} real/fake images (colour shortcut: {colour_shortcut})")
    model = train_classifier(images[train], labels[train], seed=seed, progress=console is not None)

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(EXPERIMENT, artifact_location=artifact_root.resolve().as_uri())
    )
    example = (np.zeros((2, 3) + images.shape[1:3], np.float32) - 0.5) / 0.5
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{model_name}") as run:
        mlflow.log_params({"colour_shortcut": colour_shortcut, "seed": seed, "n_train": sizes.train})
        with torch.no_grad():
            accuracy = _accuracy(model, images[val], labels[val])
        mlflow.log_metric("validation_accuracy", accuracy)
        say(f"validation accuracy {accuracy:.1%}; logging to MLflow ({tracking_uri})")
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=example,
            registered_model_name=model_name,
            # the local CPU build's "+cpu" label would make MLflow warn on every log
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
        with tempfile.TemporaryDirectory() as tmp:
            save_npz(Path(tmp) / "validation.npz", images[val], labels[val], "val")
            save_npz(Path(tmp) / "production.npz", images[prod], None, "prod")
            mlflow.log_artifacts(tmp, artifact_path="samples")
    version = info.registered_model_version
    client.set_registered_model_alias(model_name, ALIAS, str(version))
    return LoggedScenario(
        model_uri=f"models:/{model_name}@{ALIAS}",
        validation_uri=f"runs:/{run.info.run_id}/samples/validation.npz",
        production_uri=f"runs:/{run.info.run_id}/samples/production.npz",
    )


def _accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    return float((model(to_tensor(images)).argmax(1).numpy() == labels).mean())


def demo_config(scenario: LoggedScenario, home: Path, seed: int) -> AuditConfig:
    """The demo's audit: validation set as reference, production set audited, everything under
    `home`."""
    return AuditConfig(
        model=ModelSource(uri=scenario.model_uri),
        samples=[
            SampleSource(name="validation", uri=scenario.validation_uri, role="reference"),
            SampleSource(name="production", uri=scenario.production_uri),
        ],
        preprocess=Preprocess(mean=MEAN, std=STD),
        tracking_uri=demo_tracking_uri(home),
        store_url=f"sqlite:///{home / 'auditor.db'}",
        artifacts_dir=str(home / "audit-artifacts"),
        seed=seed,
    )


def demo_tracking_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def run_demo(home: Path, seed: int, console: Console, sizes: DemoSizes = DemoSizes()) -> None:
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    scenario = log_scenario(
        demo_tracking_uri(home), home / "artifacts", colour_shortcut=True, seed=seed, sizes=sizes,
        console=console,
    )
    config = demo_config(scenario, home, seed)
    config_path = home / "demo-audit.yaml"
    config_path.write_text(config.to_yaml())
    report_path = home / "demo-report.json"
    console.print(f"auditing {scenario.model_uri} with {config_path}")
    outcome = run_audit(config, report_path=report_path)
    print_summary(console, outcome, config)
    console.print(
        f"\nrerun or edit the audit: [bold]auditor audit --config {config_path} --report {report_path}[/]\n"
        f"browse the MLflow store:  [bold]mlflow ui --backend-store-uri {demo_tracking_uri(home)}[/]"
    )
