"""Shared pytest fixtures."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
import torch

from auditor.checks.neighbours import one_faiss_thread
from auditor.demo.run import DemoSizes, save_npz
from auditor.demo.scenario import make_counterfeit_data
from auditor.demo.train import MEAN, STD, train_classifier

SERVER_START_TIMEOUT_S = 240.0  # a loaded 2-core machine starts it in 60-150 s


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on loopback (SQLite backend, artefacts served by the
    server); yields its URI `http://127.0.0.1:PORT`."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
        )
    try:
        _wait_for_health(uri, process, log_path)
        yield uri
    finally:
        _stop(process)


def _wait_for_health(uri: str, process: subprocess.Popen, log_path: os.PathLike) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    with open(log_path, errors="replace") as log:
        tail = log.read()[-4000:]
    pytest.fail(f"MLflow server at {uri} did not become healthy; server log:\n{tail}")


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server's process group (it may run worker processes)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass(frozen=True)
class Scenario:
    """A trained counterfeit detector saved as an MLflow model (default pt2 format) beside its
    labelled validation set and unlabeled production set (documented .npz format)."""

    model: torch.nn.Module
    model_dir: Path
    validation: Path
    production: Path


SCENARIO_SIZES = DemoSizes(train=1200, validation=300, production=300)


def _build_scenario(root: Path, *, colour_shortcut: bool, seed: int = 0) -> Scenario:
    sizes = SCENARIO_SIZES
    n = sizes.train + sizes.validation + sizes.production
    images, labels = make_counterfeit_data(n, colour_shortcut=colour_shortcut, seed=seed)
    cut = sizes.train + sizes.validation
    model = train_classifier(images[: sizes.train], labels[: sizes.train], seed=seed)
    example = np.zeros((2, 3, 64, 64), np.float32)
    model_dir = root / "model"
    mlflow.pytorch.save_model(model, str(model_dir), input_example=example)
    return Scenario(
        model=model,
        model_dir=model_dir,
        validation=save_npz(root / "validation.npz", images[sizes.train : cut], labels[sizes.train : cut], "val"),
        production=save_npz(root / "production.npz", images[cut:], None, "prod"),
    )


@pytest.fixture(autouse=True)
def auditor_logger_restored() -> Iterator[None]:
    """An entry point run in the test's process (the evaluator) gives the `auditor` logger its
    own handler and stops propagation (`auditor.logs`); later tests capture through the root."""
    logger = logging.getLogger("auditor")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved

@pytest.fixture(scope="session")
def shortcut_scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """The demo's detector: fakes carry a structural cue and a colour tint."""
    return _build_scenario(tmp_path_factory.mktemp("shortcut"), colour_shortcut=True)


@pytest.fixture(scope="session")
def control_scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """The clean control: same data and training, no colour tint."""
    return _build_scenario(tmp_path_factory.mktemp("control"), colour_shortcut=False)


def audit_config(
    scenario: Scenario, tmp_path: Path, *, samples: list[tuple[str, Path]] | None = None, **overrides
) -> dict:
    """A plain-dict audit config over a local scenario (what a user writes in audit.yaml)."""
    config = {
        "model": {"uri": str(scenario.model_dir)},
        "samples": [
            {"name": name, "uri": str(path), "role": "reference" if name == "validation" else "production"}
            for name, path in (samples or [("validation", scenario.validation), ("production", scenario.production)])
        ],
        "artifacts_dir": str(tmp_path / "audit-artifacts"),
        "preprocess": {"mean": list(MEAN), "std": list(STD)},
        "store_url": f"sqlite:///{tmp_path / 'auditor.db'}",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    for key, value in overrides.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    return config


@pytest.fixture
def faiss_on_one_thread():
    """FAISS on one thread for the test, as the auditor builds its HNSW indexes."""
    with one_faiss_thread():
        yield
