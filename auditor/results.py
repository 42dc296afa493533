"""Typed results passed between audit stages, to the store and to the JSON report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["low", "medium", "high"]
FindingKind = Literal["spurious_channels", "probe_sensitivity"]


@dataclass(frozen=True)
class ModelRef:
    """The audited model version as resolved from the URI in the config."""

    uri: str
    name: str
    version: str | None
    flavor: str
    run_id: str | None = None


@dataclass(frozen=True)
class ConditionMetrics:
    """Metrics of one condition (a dropout set, a probe) against the unmodified model.

    `accuracy` and `average_precision` need labels (None without); `flip_rate` (share of
    samples whose predicted class changes) and `logit_drop` (mean decrease of the logit of
    the originally predicted class) are always defined.
    """

    accuracy: float | None
    average_precision: float | None
    flip_rate: float
    logit_drop: float
    n_samples: int
    n_labelled: int


@dataclass(frozen=True)
class ChannelTable:
    """Per-channel relevance `R[c] = mean_i R_i[c]` at one layer (seed 000, case C)."""

    layer: str
    method: str
    relevance: list[float]
    top_k: list[int]
    bottom_k: list[int]

    @property
    def k(self) -> int:
        return len(self.top_k)


@dataclass(frozen=True)
class DropoutTable:
    """Channel dropout at the audited layer: top-k vs random-k (repeats) vs bottom-k."""

    k: int
    baseline: ConditionMetrics
    top_k: ConditionMetrics
    random_k: list[ConditionMetrics]
    bottom_k: ConditionMetrics
    random_sets: list[list[int]]

    @property
    def random_k_mean(self) -> dict[str, float | None]:
        return mean_metrics(self.random_k)


@dataclass(frozen=True)
class ProbeResult:
    """One probe: the model's behaviour on probed samples vs a neutral perturbation of equal size,
    and the relative activation drop of the top-k channels vs random channel sets."""

    name: str
    probed: ConditionMetrics
    neutral: ConditionMetrics
    perturbation_norm: float
    top_k_activation_drop: float
    random_k_activation_drops: list[float]


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    severity: Severity
    title: str
    evidence: dict[str, Any]
    probe: str | None = None


@dataclass
class AuditResult:
    """Everything one audit found; written to the store in one transaction and to the report."""

    model: ModelRef
    n_samples: int
    n_labelled: int
    sample_sets: dict[str, int]
    channels: ChannelTable
    dropout: DropoutTable
    probes: list[ProbeResult]
    findings: list[Finding]
    timings: dict[str, float] = field(default_factory=dict)


def mean_metrics(runs: list[ConditionMetrics]) -> dict[str, float | None]:
    """Average each metric over repeated runs (seed 000: random-k averaged over 5 repeats)."""
    out: dict[str, float | None] = {}
    for name in ("accuracy", "average_precision", "flip_rate", "logit_drop"):
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        out[name] = sum(values) / len(values) if values else None
    return out


def metrics_dict(m: ConditionMetrics) -> dict[str, Any]:
    return asdict(m)
