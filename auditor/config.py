"""The audit config: one YAML file, validated by pydantic, documented in the README.

Every random choice of an audit takes its seed from here, so two runs of the same config
give the same findings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from auditor.errors import ConfigError

DEFAULT_HOME = Path(".auditor")


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else a local SQLite-backed store under `.auditor/`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_HOME / 'mlflow.db'}"


def default_store_url() -> str:
    """`AUDITOR_DB_URL` if set, else a SQLite file under `.auditor/`."""
    return os.environ.get("AUDITOR_DB_URL") or f"sqlite:///{DEFAULT_HOME / 'auditor.db'}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSource(_Strict):
    """Which model to audit and where to look inside it."""

    uri: str = Field(description="models:/name@alias, models:/name/3, runs:/ID/path or a local path")
    layer: str | None = Field(
        default=None,
        description="module path of the audited layer (e.g. layer4); default: last conv block output",
    )
    trusted: bool = Field(
        default=False,
        description="allow pickled (eager) model artefacts; unpickling runs arbitrary code",
    )


class SampleSource(_Strict):
    """One named sample set: an .npz file or an image folder, from MLflow or a local path."""

    name: str
    uri: str = Field(description="runs:/ID/path, mlflow-artifacts:/..., or a local path")


class Preprocess(_Strict):
    """How raw images become model inputs: resize, scale to [0, 1], normalise."""

    size: tuple[int, int] | None = Field(default=None, description="(height, width) to resize to")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in std):
            raise ValueError("every std must be > 0")
        return std


class RelevanceSettings(_Strict):
    """Per-channel relevance at the audited layer (seed 000, case C)."""

    method: Literal["lrp"] = "lrp"
    composite: Literal["epsilon_plus", "epsilon"] = "epsilon_plus"
    epsilon: float = Field(default=1e-6, gt=0)
    target: Literal["predicted", "label"] = Field(
        default="predicted", description="class explained: predicted class, or the label where known"
    )


class ChannelSettings(_Strict):
    """How many channels are ranked as top-k."""

    top_k: int | None = Field(default=None, ge=1, description="fixed k; default: top_k_fraction")
    top_k_fraction: float = Field(default=0.1, gt=0, le=0.5)


class DropoutSettings(_Strict):
    """Top-k vs random-k vs bottom-k channel dropout (seed 000: 5 random repeats, averaged)."""

    random_repeats: int = Field(default=5, ge=1, le=100)


class ProbeSettings(_Strict):
    """Probes that remove one candidate cue; `non_semantic` cues may not carry the decision."""

    names: list[Literal["grayscale"]] = Field(default_factory=lambda: ["grayscale"])
    non_semantic: list[Literal["grayscale"]] = Field(
        default_factory=lambda: ["grayscale"],
        description="probes whose cue the domain declares irrelevant to the label (colour here)",
    )


class Thresholds(_Strict):
    """When evidence becomes a finding. Defaults give no finding on clean control models."""

    dropout_effect: float = Field(
        default=0.2, description="top-k minus mean random-k flip rate for a validated top-k set"
    )
    probe_excess_flip: float = Field(
        default=0.2, description="probe flip rate minus neutral-perturbation flip rate"
    )
    activation_collapse: float = Field(
        default=0.3, description="top-k minus random-k mean relative activation drop under a probe"
    )


class MlflowLogging(_Strict):
    """Log each audit to an MLflow run (metrics, report, tables) and tag the audited version."""

    enabled: bool = False
    experiment: str = Field(default="relevance-audits", min_length=1)


class AuditConfig(_Strict):
    """A whole audit, as read from `audit.yaml`."""

    model: ModelSource
    samples: list[SampleSource] = Field(min_length=1)
    preprocess: Preprocess = Field(default_factory=Preprocess)
    relevance: RelevanceSettings = Field(default_factory=RelevanceSettings)
    channels: ChannelSettings = Field(default_factory=ChannelSettings)
    dropout: DropoutSettings = Field(default_factory=DropoutSettings)
    probes: ProbeSettings = Field(default_factory=ProbeSettings)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    mlflow_logging: MlflowLogging = Field(default_factory=MlflowLogging)
    tracking_uri: str = Field(default_factory=default_tracking_uri)
    store_url: str = Field(default_factory=default_store_url)
    batch_size: int = Field(default=64, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _unique_sample_names(self) -> AuditConfig:
        names = [s.name for s in self.samples]
        if len(set(names)) != len(names):
            raise ValueError(f"sample set names must be unique, got {names}")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_config(path: str | Path) -> AuditConfig:
    """Read and validate an audit config; every problem becomes one `ConfigError` line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", "pass the path of an audit YAML file")
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}", "fix the YAML syntax")
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping", "see the config format in README.md")
    try:
        return AuditConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise ConfigError(
            f"config file {path}: {field}: {first['msg']}{more}",
            "see the config format in README.md",
        )
