"""The whole audit config (`audit.yaml`) and its loader; every problem becomes one `ConfigError`."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from auditor.config.alerts import AlertSettings
from auditor.config.analysis import (
    ChannelSettings,
    DropoutSettings,
    Preprocess,
    ProbeSettings,
    RelevanceSettings,
)
from auditor.config.counterfactual import ConsolidationSettings, CounterfactualSettings
from auditor.config.drift import DriftSettings
from auditor.config.executor import ExecutorSettings
from auditor.config.gallery import GallerySettings
from auditor.config.locations import DEFAULT_HOME, default_store_url, default_tracking_uri
from auditor.config.operations import HeartbeatSettings, MlflowLogging, RetentionSettings
from auditor.config.sources import ModelSource, SampleSource
from auditor.config.strict import StrictModel
from auditor.config.subclasses import SubclassSettings
from auditor.config.thresholds import Thresholds
from auditor.errors import ConfigError
from auditor.redaction import redact


class AuditConfig(StrictModel):
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
    drift: DriftSettings = Field(default_factory=DriftSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings)
    subclasses: SubclassSettings = Field(default_factory=SubclassSettings)
    gallery: GallerySettings = Field(default_factory=GallerySettings)
    counterfactual: CounterfactualSettings = Field(default_factory=CounterfactualSettings)
    consolidation: ConsolidationSettings = Field(default_factory=ConsolidationSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    tracking_uri: str = Field(default_factory=default_tracking_uri)
    store_url: str = Field(default_factory=default_store_url)
    artifacts_dir: str = Field(
        default=str(DEFAULT_HOME / "audit-artifacts"),
        description="root of the audits' files (embeddings, index, maps): <root>/audit-<id>/",
    )
    batch_size: int = Field(default=64, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _unique_sample_names(self) -> AuditConfig:
        names = [s.name for s in self.samples]
        if len(set(names)) != len(names):
            raise ValueError(f"sample set names must be unique, got {names}")
        return self

    @property
    def pass_batch_size(self) -> int:
        """Samples per batch of the executor's passes."""
        return self.executor.batch_size or self.batch_size

    def to_yaml(self) -> str:
        """The config as YAML, with secrets masked (`redact`): what is stored, logged and sent
        to MLflow. `*_env` fields name environment variables and stay."""
        return redact(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    def audit_artifact_dir(self, audit_id: int) -> Path:
        """The folder of one audit's files: `<artifacts_dir>/audit-<id>`."""
        return Path(self.artifacts_dir) / f"audit-{audit_id}"


def load_config(path: str | Path) -> AuditConfig:
    """Read and validate an audit config; every problem becomes one `ConfigError` line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist", "pass the path of an audit YAML file"
        )
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}", "fix the YAML syntax")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping", "see the config format in README.md"
        )
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
