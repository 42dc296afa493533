"""The audit config: one YAML file, validated by pydantic, documented in the README.

Every random choice of an audit takes its seed from here, so two runs of the same config
give the same findings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from auditor.alerts.sinks import AlertSink
from auditor.errors import ConfigError
from auditor.results import Severity

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

    uri: str = Field(
        description="models:/name@alias, models:/name/3, runs:/ID/path or a local path"
    )
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
    role: Literal["reference", "production"] = Field(
        default="production",
        description="reference: samples the model is known to handle (validation, training); "
        "production: the audited traffic",
    )


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


def _lrp_composite(name: str) -> str:
    # imported on use: the LRP rules pull in torch, the config alone does not
    from auditor.relevance.rules import COMPOSITES

    COMPOSITES.get(name)  # unknown name: UnknownExtensionError (a ValueError) naming the known
    return name


LrpComposite = Annotated[str, AfterValidator(_lrp_composite)]


class RelevanceSettings(_Strict):
    """Per-channel relevance at the audited layer [Chandrasegaran2022]."""

    method: Literal["lrp"] = "lrp"
    composite: LrpComposite = Field(
        default="epsilon_plus", description="any registered LRP composite (built-in or plug-in)"
    )
    epsilon: float = Field(default=1e-6, gt=0)
    target: Literal["predicted", "label"] = Field(
        default="predicted",
        description="class explained: predicted class, or the label where known",
    )


class ChannelSettings(_Strict):
    """How many channels are ranked as top-k."""

    top_k: int | None = Field(default=None, ge=1, description="fixed k; default: top_k_fraction")
    top_k_fraction: float = Field(default=0.2, gt=0, le=0.5)
    min_class_samples: int = Field(
        default=20, ge=1, description="per-class analysis for classes predicted this often"
    )


class DropoutSettings(_Strict):
    """Top-k vs random-k vs bottom-k channel dropout ([Chandrasegaran2022]: 5 random repeats,
    averaged)."""

    random_repeats: int = Field(default=5, ge=1, le=100)
    dose_response_fractions: list[Annotated[float, Field(gt=0, le=0.5)]] = Field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5],
        description="shares of the layer's channels dropped along the dose-response curve "
        "(top-k vs random-k vs bottom-k per k); [] turns it off",
    )
    dose_response_random_repeats: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="random-k sets per k of the dose-response; the empirical p-value is at "
        "least 1 / (repeats + 1), so 19 or more are needed for p <= 0.05",
    )
    bootstrap_replicates: int = Field(
        default=1000, ge=100, le=100_000, description="bootstrap replicates over samples"
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="level of the bootstrap confidence intervals"
    )


def _probe_entry(entry: str | dict[str, Any]) -> str | dict[str, Any]:
    # imported on use: the probe library pulls in torch, the config alone does not
    from auditor.checks.probes.base import build_probe

    build_probe(entry)  # unknown probe, unknown parameter or invalid value: ValueError
    return entry


ProbeEntry = Annotated[str | dict[str, Any], AfterValidator(_probe_entry)]
ProbeName = Annotated[str, AfterValidator(_probe_entry)]


class ProbeSettings(_Strict):
    """Probes that remove one candidate cue; `non_semantic` cues may not carry the decision.
    Any registered probe (built-in or plug-in, see `auditor.checks.probes`) by name, or with
    parameters: `{name: blur, sigma: 2.0}`."""

    names: list[ProbeEntry] = Field(default_factory=lambda: ["grayscale"])
    non_semantic: list[ProbeName] = Field(
        default_factory=lambda: ["grayscale"],
        description="probes whose cue the domain declares irrelevant to the label (colour "
        "here), by name: they cover every entry of that probe in `names`",
    )

    @model_validator(mode="after")
    def _distinct_probes(self) -> ProbeSettings:
        from auditor.checks.probes.base import build_probe

        labels = [build_probe(entry).label for entry in self.names]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"probes listed twice with the same parameters: {twice}")
        return self


class Thresholds(_Strict):
    """When evidence becomes a finding. Defaults give no finding on clean control models."""

    dropout_effect: float = Field(
        default=0.15,
        description="top-k minus mean random-k margin drop for a validated top-k set "
        "(the top-k must also beat every random-k set)",
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


class DriftThresholds(_Strict):
    """Tolerated change of explanation statistics against the baseline audit. A statistic
    drifts when it lies past its threshold and outside its no-drift (sampling noise) range."""

    spearman_min: float = Field(
        default=0.8, ge=-1, le=1, description="rank correlation of per-channel relevance"
    )
    jaccard_min: float = Field(default=0.5, ge=0, le=1, description="overlap of the top-k sets")
    js_distance_max: float = Field(
        default=0.1, ge=0, le=1, description="Jensen-Shannon distance (base 2) of relevance shares"
    )
    probe_change_max: float = Field(
        default=0.2, ge=0, le=1, description="change of a probe's excess flip rate"
    )
    cluster_mix_max: float = Field(
        default=0.2, ge=0, le=1, description="total variation distance of matched cluster shares"
    )


class DriftSettings(_Strict):
    """Explanation drift against a baseline: a pinned audit, else the model's previous one."""

    enabled: bool = True
    baseline_audit_id: int | None = Field(
        default=None, description="pinned baseline audit; default: previous successful audit"
    )
    bootstrap_replicates: int = Field(default=200, ge=50, le=5000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    severity: Severity = "medium"
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)


class AlertRule(_Strict):
    """When to alert: explanation drift, a finding at or above `min_severity` (only one
    absent from the model's previous audit when `new_only`), or a failed audit."""

    event: Literal["drift", "finding", "audit_failed"]
    min_severity: Severity = "high"
    new_only: bool = True
    sinks: list[str] = Field(min_length=1)
    cooldown_s: float | None = Field(
        default=None, ge=0, description="per rule; default: alerts.cooldown_s"
    )


class AlertSettings(_Strict):
    """Alert sinks and the rules that feed them; an alert with the fingerprint of one sent to
    the same sink within the cooldown is stored as suppressed instead of sent."""

    cooldown_s: float = Field(default=86400, ge=0)
    sinks: list[AlertSink] = Field(
        default_factory=list, description="each validated by the settings model of its `type`"
    )
    rules: list[AlertRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules_name_sinks(self) -> AlertSettings:
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"alert sink names must be unique, got {names}")
        for rule in self.rules:
            unknown = sorted(set(rule.sinks) - set(names))
            if unknown:
                raise ValueError(f"alert rule names unknown sinks {unknown}; defined: {names}")
        return self


class RetentionSettings(_Strict):
    """Prune the artefacts (files) of old audits; their statistics and findings stay."""

    artefact_days: float | None = Field(
        default=None, gt=0, description="prune artefacts of audits older than this; null: never"
    )
    keep_last: int = Field(default=3, ge=0, description="never prune the newest audits of a model")


class HeartbeatSettings(_Strict):
    """A running audit refreshes its heartbeat; one silent for `stale_after_s` (or whose
    process is gone, on the same host) is marked failed by the next auditor that starts."""

    interval_s: float = Field(default=30, gt=0)
    stale_after_s: float = Field(default=600, gt=0)

    @model_validator(mode="after")
    def _timeout_spans_beats(self) -> HeartbeatSettings:
        if self.stale_after_s < 3 * self.interval_s:
            raise ValueError("stale_after_s must be at least 3 * interval_s")
        return self


class GallerySettings(_Strict):
    """Channel galleries for the dashboard: per channel, the samples that activate it most
    [Zeiler2014], the input region where its relevance peaks [Chandrasegaran2022] and its
    channel-conditional relevance heatmap."""

    enabled: bool = True
    channels: Literal["top_k", "all_flagged"] = Field(
        default="all_flagged",
        description="top_k: the global top-k channels; all_flagged: also every analysed "
        "class's top-k and the channels each finding names",
    )
    samples_per_channel: int = Field(default=8, ge=1, le=64)
    thumbnail: int = Field(default=128, ge=16, le=1024, description="longest tile edge, pixels")


class SubclassThresholds(_Strict):
    """When a cluster is an `unlabeled_subclass` [Hagele2020]: it is made of
    production samples, predicted confidently as one class, and far from that class's reference
    samples or explained by a different relevance strategy. Defaults give no finding when
    production is drawn like the reference."""

    min_cluster_size: int = Field(default=10, ge=2, description="members of a flagged cluster")
    max_reference_share: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="the cluster's share of reference samples, relative to their share of all "
        "samples, at most this",
    )
    min_prediction_share: float = Field(
        default=0.9, gt=0.5, le=1, description="share of the members predicted as one class"
    )
    min_confidence: float = Field(
        default=0.9, ge=0, le=1, description="their mean softmax probability of that class"
    )
    distance_ratio: float = Field(
        default=2.0,
        gt=1,
        description="median distance of its production members to their nearest reference "
        "samples of the class, over those reference samples' median distance to their own "
        "nearest reference neighbours",
    )
    profile_distance: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Jensen-Shannon distance (base 2) of its mean channel relevance to the "
        "class's reference samples' (SpRAy: same prediction, different strategy)",
    )


class SubclassSettings(_Strict):
    """Clusters of pooled layer embeddings, a nearest-neighbour index and 2-D maps of the
    samples; clusters of production samples unlike the reference become findings."""

    enabled: bool = True
    embedding_layer: str | None = Field(
        default=None, description="convolutional layer to embed; default: the audited layer"
    )
    metric: Literal["cosine", "l2"] = Field(
        default="cosine", description="distance between embeddings (cosine: of unit vectors)"
    )
    k: int | None = Field(default=None, ge=2, description="clusters; default: eigengap up to k_max")
    k_max: int = Field(default=10, ge=2)
    graph_neighbours: int = Field(
        default=10, ge=2, description="neighbours per sample in the graph that is clustered"
    )
    cluster_samples: int = Field(
        default=5000,
        ge=100,
        description="cluster a seeded subsample of this size; the other samples join the "
        "cluster of their nearest clustered sample",
    )
    kmeans_iterations: int = Field(default=25, ge=1)
    index: Literal["auto", "flat", "ivf", "hnsw"] = Field(
        default="auto", description="FAISS index; auto: flat up to index_threshold, else hnsw"
    )
    index_threshold: int = Field(default=50_000, ge=1)
    float16_above: int = Field(
        default=100_000, ge=0, description="store the embeddings as float16 above this many samples"
    )
    maps: list[Literal["pca", "tsne"]] = Field(
        default_factory=lambda: ["pca"], description="2-D maps; PCA is always made"
    )
    map_samples: int = Field(
        default=20_000, ge=10, description="maps of a seeded subsample of at most this size"
    )
    evidence_samples: int = Field(
        default=20, ge=1, description="member ids (and their nearest references) in a finding"
    )
    thresholds: SubclassThresholds = Field(default_factory=SubclassThresholds)


class ExecutorSettings(_Strict):
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
    drift: DriftSettings = Field(default_factory=DriftSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings)
    subclasses: SubclassSettings = Field(default_factory=SubclassSettings)
    gallery: GallerySettings = Field(default_factory=GallerySettings)
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
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

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
