"""The audit config: one YAML file, validated by pydantic, documented in the README.

Every random choice of an audit takes its seed from here, so two runs of the same config
give the same findings. This package's public API: each section's model, the root
`AuditConfig`, `load_config` and the default locations.
"""

from auditor.config.alerts import AlertRule, AlertSettings
from auditor.config.analysis import (
    ChannelSettings,
    DropoutSettings,
    Preprocess,
    ProbeSettings,
    RelevanceSettings,
)
from auditor.config.audit import AuditConfig, load_config
from auditor.config.counterfactual import ConsolidationSettings, CounterfactualSettings
from auditor.config.drift import DriftSettings, DriftThresholds
from auditor.config.executor import ExecutorSettings
from auditor.config.gallery import GallerySettings
from auditor.config.locations import DEFAULT_HOME, default_store_url, default_tracking_uri
from auditor.config.operations import HeartbeatSettings, MlflowLogging, RetentionSettings
from auditor.config.sources import ModelSource, SampleColumns, SampleSource
from auditor.config.subclasses import NoveltySettings, SubclassSettings, SubclassThresholds
from auditor.config.thresholds import Thresholds

__all__ = [
    "DEFAULT_HOME",
    "AlertRule",
    "AlertSettings",
    "AuditConfig",
    "ChannelSettings",
    "ConsolidationSettings",
    "CounterfactualSettings",
    "DriftSettings",
    "DriftThresholds",
    "DropoutSettings",
    "ExecutorSettings",
    "GallerySettings",
    "HeartbeatSettings",
    "MlflowLogging",
    "ModelSource",
    "NoveltySettings",
    "Preprocess",
    "ProbeSettings",
    "RelevanceSettings",
    "RetentionSettings",
    "SampleColumns",
    "SampleSource",
    "SubclassSettings",
    "SubclassThresholds",
    "Thresholds",
    "default_store_url",
    "default_tracking_uri",
    "load_config",
]
