"""Typed results passed between audit stages, to the store and to the JSON report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from auditor.evidence import FINDING_KINDS, CueExplanation, FindingEvidence

Severity = Literal["low", "medium", "high"]


@dataclass(frozen=True)
class ModelRef:
    """The audited model version as resolved from the URI in the config."""

    uri: str
    name: str
    version: str | None
    flavor: str
    run_id: str | None = None
    #: what the audit measured: "logits", "logits before the final Softmax" (or Sigmoid) or
    #: "log-probabilities" (`auditor.model.outputs`)
    scores: str = "logits"


@dataclass(frozen=True)
class GroupMetrics:
    """A condition's metrics over the samples of one `groups` value (e.g. a site or scanner):
    accuracy on its labelled samples (None without), flip rate and mean share of margin lost."""

    n_samples: int
    n_labelled: int
    accuracy: float | None
    flip_rate: float
    margin_drop: float


@dataclass(frozen=True)
class ConditionMetrics:
    """Metrics of one condition (a dropout set, a probe) against the unmodified model.

    `accuracy` and `average_precision` need labels (None without); always defined:
    `flip_rate` (share of samples whose predicted class changes), `logit_drop` (mean decrease
    of the logit of the originally predicted class) and `margin_drop`, the mean share of the
    decision margin lost, `(m - m') / |m|` with `m` the logit of the predicted class minus the
    largest other logit (0: untouched, 1: on the decision boundary, > 1: flipped). Confident
    models rarely flip under a partial ablation; the margin shows how far they moved.
    """

    accuracy: float | None
    average_precision: float | None
    flip_rate: float
    logit_drop: float
    n_samples: int
    n_labelled: int
    margin_drop: float = 0.0
    #: recall per true class (class index -> share of its labelled samples predicted as it)
    per_class_recall: dict[int, float] = field(default_factory=dict)
    #: metrics per `groups` value of the samples (empty without groups)
    per_group: dict[str, GroupMetrics] = field(default_factory=dict)


@dataclass(frozen=True)
class ChannelTable:
    """Per-channel relevance `R[c] = mean_i R_i[c]` at one layer [Chandrasegaran2022]."""

    layer: str
    method: str
    relevance: list[float]
    top_k: list[int]
    bottom_k: list[int]

    @property
    def k(self) -> int:
        return len(self.top_k)


@dataclass(frozen=True)
class DropoutStatistics:
    """How sure the top-k dropout effect is (`auditor.checks.statistics.dropout_evidence`):
    `effect`, the mean over samples of the margin lost under top-k minus under random-k
    (averaged over the random sets); [`ci_low`, `ci_high`] its bootstrap interval over samples;
    `p_value`, the empirical p-value of the top-k mean margin drop among the random-k ones
    (+1 corrected, >= 1 / (random sets + 1)); `effect_size`, the effect in random-k spreads;
    `n_null`, the random sets."""

    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    effect_size: float
    n_null: int | None = None


@dataclass(frozen=True)
class DropoutTable:
    """Channel dropout at the audited layer: top-k vs random-k (repeats) vs bottom-k."""

    k: int
    baseline: ConditionMetrics
    top_k: ConditionMetrics
    random_k: list[ConditionMetrics]
    bottom_k: ConditionMetrics
    random_sets: list[list[int]]
    statistics: DropoutStatistics | None = None

    @property
    def random_k_mean(self) -> dict[str, float | None]:
        return mean_metrics(self.random_k)


@dataclass(frozen=True)
class DosePoint:
    """Dropout of k channels: top-k, each random-k set, bottom-k, and the top-k statistics."""

    k: int
    top_k: ConditionMetrics
    random_k: list[ConditionMetrics]
    bottom_k: ConditionMetrics
    statistics: DropoutStatistics

    @property
    def random_k_mean(self) -> dict[str, float | None]:
        return mean_metrics(self.random_k)

    @property
    def random_k_spread(self) -> dict[str, float | None]:
        return spread_metrics(self.random_k)


@dataclass(frozen=True)
class DoseResponse:
    """Channel dropout over several k (`auditor.checks.dose_response`): a relevance ranking that
    tracks what the model uses loses margin faster with k under top-k than under random-k."""

    n_channels: int
    points: list[DosePoint]

    def curve(
        self, condition: Literal["top_k", "random_k", "bottom_k"], metric: str
    ) -> list[float | None]:
        """One metric along k (random-k: its mean over the sets)."""
        if condition == "random_k":
            return [p.random_k_mean[metric] for p in self.points]
        return [getattr(getattr(p, condition), metric) for p in self.points]


@dataclass(frozen=True)
class OcclusionMap:
    """Patch occlusion over a grid x grid partition of the image (`patch_occlusion` probe): per
    cell (row-major), the mean share of margin lost and the flip rate when that cell is occluded.
    A localized cue (watermark, text, ruler) shows as one cell far above the others."""

    grid: int
    margin_drop: list[list[float]]
    flip_rate: list[list[float]]
    worst_cell: int

    @property
    def concentration(self) -> float:
        """Margin drop of the worst cell minus the median cell's."""
        cells = np.asarray(self.margin_drop).ravel()
        return float(cells[self.worst_cell] - np.median(cells))


@dataclass(frozen=True)
class ClassFlips:
    """A probe's flips on the samples predicted as one class, against its control's on the same
    samples (`auditor.checks.probes.effect.class_flips`): `flips_only_probe` samples flip under
    the probe and not the control, `flips_only_control` the reverse; `p_value`, the one-sided
    exact McNemar test of the two [McNemar1947]. A cue tied to the class moves that class
    toward the others under the probe and not under the control."""

    class_index: int
    n_samples: int
    flip_rate: float
    control_flip_rate: float
    flips_only_probe: int
    flips_only_control: int
    p_value: float

    @property
    def excess(self) -> float:
        """Flip rate under the probe minus under the control."""
        return self.flip_rate - self.control_flip_rate


@dataclass(frozen=True)
class ProbeResult:
    """One probe: the model's behaviour on probed samples vs its control (`neutral`: another
    class's change of the same kind and size, `auditor.checks.probes.neutral`), per predicted
    class too, and the share of activation lost by the top-k channels vs random channel sets."""

    name: str
    probed: ConditionMetrics
    neutral: ConditionMetrics
    perturbation_norm: float
    top_k_activation_drop: float
    random_k_activation_drops: list[float]
    occlusion: OcclusionMap | None = None
    per_class: list[ClassFlips] = field(default_factory=list)


@dataclass(frozen=True)
class ActivationTest:
    """A channel set's activation shift under a probe against random channel sets
    (`auditor.checks.probes.effect.activation_test`): `statistic`, the set's mean standardised
    loss (> 0: the channels lose activation, in units of their spread over the samples); the
    mean and spread of that statistic over `n_null` random sets on the same samples; the
    one-sided empirical `p_value` (>= 1 / (n_null + 1)) and the `effect_size` in null spreads."""

    statistic: float
    null_mean: float
    null_sd: float
    n_null: int
    p_value: float
    effect_size: float


@dataclass(frozen=True)
class ProbeShift:
    """How much a probe silences a channel set, relative to random sets ([Chandrasegaran2022]
    compare the activations of the relevant channels on original and grey-scaled images):
    the share of activation lost by the top-k and by each random set of the dropout (`sum (m -
    m') / sum |m|`, < 0 a gain, never clipped) and the top-k's test against random sets."""

    probe: str
    top_k_activation_drop: float
    random_k_activation_drops: list[float]
    test: ActivationTest | None = None

    @property
    def collapse(self) -> float:
        """Top-k share of activation lost minus the mean of the random sets'."""
        return self.top_k_activation_drop - sum(self.random_k_activation_drops) / len(
            self.random_k_activation_drops
        )


@dataclass(frozen=True)
class ClassAnalysis:
    """The channels the model uses for one predicted class ([Chandrasegaran2022] ranks the
    channels of the counterfeit class): ranking over the samples predicted as that class,
    dropout on them, and the activation shift of those channels under each probe on them."""

    class_index: int
    class_name: str
    n_samples: int
    relevance: list[float]
    top_k: list[int]
    bottom_k: list[int]
    dropout: DropoutTable
    probe_shifts: list[ProbeShift]


@dataclass(frozen=True)
class Finding:
    """One finding: `kind` names a registered finding kind (`auditor.evidence.FINDING_KINDS`)
    and `evidence` is that kind's evidence model. `supports`: the index (in the audit's
    findings) of the finding whose verdict this one supports (None: it heads its own), and
    `explanation` the test that made it a support, where one did
    (`auditor.checks.consolidation`)."""

    kind: str
    severity: Severity
    title: str
    evidence: FindingEvidence
    probe: str | None = None
    supports: int | None = None
    explanation: CueExplanation | None = None

    def __post_init__(self) -> None:
        model = FINDING_KINDS.get(self.kind).evidence
        if not isinstance(self.evidence, model):
            raise TypeError(
                f"a {self.kind} finding needs {model.__name__} evidence, "
                f"not {type(self.evidence).__name__}"
            )


@dataclass(frozen=True)
class ClusterSummary:
    """One cluster of an audit's samples: its size and the mean per-channel relevance of its
    members at the audited layer (the profile matches clusters across audits)."""

    cluster: int
    size: int
    relevance_profile: list[float]
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Map2D:
    """A 2-D map of the audit's sample embeddings (t-SNE [VanDerMaaten2008] to show the
    similarities of feature maps; PCA [Pearson1901]): `coords[j]` places sample `rows[j]` of
    the sample set."""

    method: str
    coords: np.ndarray
    rows: np.ndarray


@dataclass(frozen=True)
class SubclassResult:
    """The clusters of an audit's pooled embeddings at `layer` (unlabeled subclasses [Hagele2020]),
    the `unlabeled_subclass` findings among them, the 2-D maps, and the files written for the
    neighbours command and the dashboard (embeddings, sample ids, FAISS index, maps).
    `eigenvalues`: the smallest eigenvalues of the sample graph's Laplacian, which chose `k`;
    `note` says why no finding could be derived (no reference samples, too few samples)."""

    layer: str
    metric: str
    k: int
    eigenvalues: list[float]
    clusters: list[ClusterSummary]
    findings: list[Finding]
    maps: list[Map2D]
    artefacts: list[ArtefactRef]
    note: str | None = None


@dataclass(frozen=True)
class ArtefactRef:
    """A file an audit wrote (gallery, heatmaps, arrays): its kind, local path or URI, and the
    index in `AuditResult.findings` of the finding it illustrates (None: the whole audit)."""

    kind: str
    uri: str
    finding: int | None = None


@dataclass(frozen=True)
class GalleryEntry:
    """One of the samples that activate a channel most ([Zeiler2014]; `s_c(x) = sum_hw max(0,
    z[c, h, w])`), where the channel's relevance for it peaks ([Chandrasegaran2022]: `(h*, w*) =
    argmax_hw R_i[c, h, w]`; `located_by` "activation": the channel held no positive relevance,
    its activation's argmax instead) and the input box that position sees (`top, left, bottom,
    right`, bottom and right exclusive). `relevance` is `sum_hw R_i[c, h, w]`."""

    sample_index: int
    sample_id: str
    score: float
    relevance: float
    position: tuple[int, int]
    located_by: Literal["relevance", "activation"]
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class ChannelGallery:
    """A channel's gallery: its top samples, best first, and its two PNG strips (file names in
    the gallery folder): the samples with their regions outlined, and the same with the
    channel-conditional relevance heatmap overlaid. `sets` names the channel sets it is in."""

    channel: int
    sets: list[str]
    entries: list[GalleryEntry]
    samples_image: str
    heatmaps_image: str


@dataclass(frozen=True)
class GalleryResult:
    """Channel galleries of one audit at `layer`, written to `directory` with `manifest`
    (JSON) describing them; `target` is the explained class of the relevance ("predicted" or
    "label"); `artefacts` lists every file written, linked to the finding a channel set names."""

    layer: str
    target: str
    directory: str
    channel_sets: dict[str, list[int]]
    channels: list[ChannelGallery]
    artefacts: list[ArtefactRef]
    manifest: str = "manifest.json"


@dataclass(frozen=True)
class RelevanceBootstrap:
    """Bootstrap replicates of an audit's mean channel relevance `R[c]`: row b of `means`
    (B x C, float32) averages `R_i[c]` over resample b (N draws with replacement) of its N
    samples. Stored with the audit, so later audits bootstrap drift statistics against it."""

    means: np.ndarray
    n_samples: int
    seed: int


@dataclass(frozen=True)
class DriftStatistic:
    """One explanation statistic against the baseline audit. `interval` is its no-drift range:
    where the statistic falls with the configured confidence when both audits sample the same
    population (bootstrap); `bound` says which side of `threshold` is tolerated. It drifts
    when its value lies past both the threshold and the no-drift range."""

    name: str
    value: float
    interval: tuple[float, float]
    threshold: float
    bound: Literal["min", "max"]

    @property
    def drifted(self) -> bool:
        low, high = self.interval
        if self.bound == "min":
            return self.value < min(self.threshold, low)
        return self.value > max(self.threshold, high)


@dataclass(frozen=True)
class DriftReport:
    """An audit's explanation statistics against its baseline audit (None: no comparable
    baseline, `note` says why), and the findings for the statistics that drifted."""

    bootstrap: RelevanceBootstrap
    baseline_audit_id: int | None
    statistics: list[DriftStatistic]
    findings: list[Finding]
    note: str | None = None


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
    classes: list[ClassAnalysis] = field(default_factory=list)
    subclasses: SubclassResult | None = None
    dose_response: DoseResponse | None = None
    gallery: GalleryResult | None = None



@dataclass(frozen=True)
class AuditOutcome:
    """A stored audit: its id, results, report file (if one was asked for) and drift."""

    audit_id: int
    result: AuditResult
    report_path: Path | None
    drift: DriftReport | None = None


def mean_metrics(runs: list[ConditionMetrics]) -> dict[str, float | None]:
    """Average each metric over repeated runs ([Chandrasegaran2022]: random-k averaged over 5
    repeats)."""
    out: dict[str, float | None] = {}
    for name in ("accuracy", "average_precision", "flip_rate", "logit_drop", "margin_drop"):
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        out[name] = sum(values) / len(values) if values else None
    return out


def spread_metrics(runs: list[ConditionMetrics]) -> dict[str, float | None]:
    """Sample standard deviation of each metric over repeated runs (0 for a single run)."""
    out: dict[str, float | None] = {}
    for name in ("accuracy", "average_precision", "flip_rate", "logit_drop", "margin_drop"):
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        out[name] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0 if values else None
    return out


def metrics_dict(m: ConditionMetrics) -> dict[str, Any]:
    """The scalar metrics (the store's columns); the per-class / per-group breakdowns are not."""
    return {k: v for k, v in asdict(m).items() if k not in ("per_class_recall", "per_group")}
