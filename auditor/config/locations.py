"""Where the auditor keeps its state by default: the `.auditor/` folder, MLflow, the store."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path(".auditor")


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else a local SQLite-backed store under `.auditor/`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_HOME / 'mlflow.db'}"


def default_store_url() -> str:
    """`AUDITOR_DB_URL` if set, else a SQLite file under `.auditor/`."""
    return os.environ.get("AUDITOR_DB_URL") or f"sqlite:///{DEFAULT_HOME / 'auditor.db'}"
