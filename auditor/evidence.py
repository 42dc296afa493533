"""Finding kinds: the registry `FINDING_KINDS` of every kind of finding, each with the typed
model of its evidence and the evidence fields that identify the same finding in later audits.

A finding's evidence is one frozen pydantic model per kind. The JSON report and the store keep
it as `model_dump(mode="json")`; reading a stored finding back validates that JSON through its
kind's model (`FindingKind.read`), so readers use fields, never string keys.

A plug-in adds a kind under the entry point group `relevance_auditor.finding_kinds`: the entry
point names the kind and loads its `FindingKind` (see README, "How to add a finding kind").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_serializer

from auditor.registry import Registry


class FindingEvidence(BaseModel):
    """Base of every kind's evidence: frozen, and no field beyond the declared ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class FindingKind:
    """A kind of finding: what it states, the model of its evidence, and what identifies it.

    The fingerprint of a finding (`auditor.store.rows.finding_fingerprint`) hashes its kind,
    probe, model name and layer, then `identity(evidence)`: the sorted channel set of the
    evidence field `channel_set` (None without one) and `[name, value]` of each field in
    `fingerprint_fields`. The same finding in consecutive audits of a model hashes the same,
    so a reviewer's verdict carries over to it.
    """

    description: str
    evidence: type[FindingEvidence]
    channel_set: str | None = None
    fingerprint_fields: tuple[str, ...] = ()

    def channels(self, evidence: FindingEvidence) -> list[int] | None:
        """The channel set the finding names (None: a kind without one)."""
        if self.channel_set is None:
            return None
        return [int(c) for c in getattr(evidence, self.channel_set)]

    def identity(self, evidence: FindingEvidence) -> list[Any]:
        """The evidence part of the fingerprint's key (JSON values)."""
        channels = self.channels(evidence)
        values = evidence.model_dump(mode="json")
        return [
            None if channels is None else sorted(channels),
            *([name, values[name]] for name in self.fingerprint_fields),
        ]

    def read(self, stored: dict[str, Any]) -> FindingEvidence:
        """Stored evidence JSON validated into the kind's model."""
        return self.evidence.model_validate(stored)


def _check_kind(name: str, kind: FindingKind) -> None:
    if not isinstance(kind, FindingKind):
        raise TypeError(f"finding kind '{name}' is a {type(kind).__name__}, not a FindingKind")
    if not (isinstance(kind.evidence, type) and issubclass(kind.evidence, FindingEvidence)):
        raise TypeError(f"finding kind '{name}': evidence must subclass FindingEvidence")
    named = [f for f in (kind.channel_set, *kind.fingerprint_fields) if f is not None]
    missing = [f for f in named if f not in kind.evidence.model_fields]
    if missing:
        raise TypeError(
            f"finding kind '{name}': fingerprint fields {missing} are not fields of "
            f"{kind.evidence.__name__}"
        )


FINDING_KINDS: Registry[FindingKind] = Registry(
    "finding kind", "relevance_auditor.finding_kinds", validate=_check_kind
)


def _without_none(out: dict[str, Any], name: str) -> dict[str, Any]:
    """A serialised evidence without its optional part `name` where the audit did not measure
    it (None)."""
    if out.get(name) is None:
        out.pop(name, None)
    return out


class CueExplanation(FindingEvidence):
    """Why a finding supports another's verdict (`auditor.checks.consolidation`): its probe
    re-run on the images with the localized cue `explained_by` occluded. `flip_rate` /
    `occluded_flip_rate`: the probe's flips on the images / the occluded images; `vanished`
    and `appeared`: the samples flipped only before / only after occlusion; McNemar's one-sided
    `p_value`; `remaining_excess`: the occluded flip rate minus the probe's neutral flip rate,
    against the excess that makes a finding; `explained` when `p_value <= alpha` and the
    remaining excess is below it."""

    explained_by: str
    flip_rate: float
    occluded_flip_rate: float
    neutral_flip_rate: float
    vanished: int
    appeared: int
    p_value: float
    remaining_excess: float
    excess_threshold: float
    alpha: float
    explained: bool


class Decision(FindingEvidence):
    """How a finding was decided: its `p_value` against its null (`null` says which), Holm's
    adjusted p-value over the audit's `family_size` tests [Aickin1996], at most the stated
    `false_alarm_rate` (the family-wise rate: the chance that an audit of a model without any
    such effect reports one), and the `n_null` draws of the null (None: an exact test)."""

    p_value: float
    adjusted_p_value: float
    family_size: int
    false_alarm_rate: float
    correction: Literal["holm"] = "holm"
    null: str
    n_null: int | None = None


class ClassFlipsEvidence(FindingEvidence):
    """A probe's flips on the samples predicted as one class against its control's
    (`auditor.results.ClassFlips`; `p_value`: exact one-sided McNemar test)."""

    class_index: int
    class_name: str
    n_samples: int
    flip_rate: float
    control_flip_rate: float
    flips_only_probe: int
    flips_only_control: int
    p_value: float


class ProbeSensitivityEvidence(FindingEvidence):
    """Predictions under a probe against its control (`neutral_*`: another class's change of
    the same kind and size, `auditor.checks.probes.neutral`); `threshold`: the configured
    `probe_excess_flip`, which the excess of the most affected class (`class_index`) must
    reach; `per_class`, every tested class; `decision`, its test (absent in findings stored
    before it). Accuracies need labels (None without)."""

    flip_rate: float
    neutral_flip_rate: float
    excess_flip_rate: float
    margin_drop: float
    neutral_margin_drop: float
    accuracy: float | None
    baseline_accuracy: float | None
    perturbation_norm: float
    threshold: float
    class_index: int | None = None
    class_name: str | None = None
    class_excess_flip_rate: float | None = None
    per_class: list[ClassFlipsEvidence] = []
    decision: Decision | None = None


class DropoutTest(FindingEvidence):
    """The bootstrap test of a top-k dropout effect (`auditor.results.DropoutStatistics`;
    `n_null`: the random sets of its p-value, absent in findings stored before it)."""

    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    effect_size: float
    n_null: int | None = None


class DropoutEffect(FindingEvidence):
    """Top-k margin drop against the random-k sets (`auditor.checks.findings.dropout_effect`):
    `effect` = top-k minus random-k mean margin drop; `effect_size`, the top-k margin drop in
    random-k spreads (`auditor.checks.statistics.effect_size`); `statistics`, where the audit
    tested the effect (left out of the JSON otherwise)."""

    statistics: DropoutTest | None = None
    top_k_margin_drop: float
    random_k_margin_drop_mean: float
    random_k_margin_drop_max: float
    bottom_k_margin_drop: float
    top_k_flip_rate: float
    random_k_flip_rate_mean: float
    effect: float
    effect_size: float

    @model_serializer(mode="wrap")
    def _without_untested(self, handler: Any) -> dict[str, Any]:
        return _without_none(handler(self), "statistics")


class ChannelThresholds(FindingEvidence):
    """The configured thresholds a `spurious_channels` finding passed."""

    dropout_effect: float
    activation_collapse: float


class CounterfactualEvidence(FindingEvidence):
    """The cue transplanted into `n_recipients` samples predicted as other classes
    (`auditor.checks.counterfactual`): the share whose prediction moves to the finding's class
    (`flip_rate`) against a `control` transplant ("random_region": the same donor's region of
    the same size elsewhere; "same_class_donor": the transplant from a donor of the recipient's
    class), the discordant pairs, McNemar's one-sided exact `p_value` and `confirmed`
    (`p_value <= alpha`)."""

    n_recipients: int
    flip_rate: float
    control_flip_rate: float
    control: Literal["random_region", "same_class_donor"]
    cue_only: int
    control_only: int
    p_value: float
    alpha: float
    confirmed: bool
    recipients: list[str]
    donors: list[str]
class ActivationShiftTest(FindingEvidence):
    """The top-k's activation shift under the probe against random channel sets on the same
    samples (`auditor.results.ActivationTest`, `auditor.checks.probes.effect`): `statistic`,
    the mean standardised loss of the top-k (channel mean lost over the channel's spread; > 0 a
    loss); `null_mean`, `null_sd` of that statistic over `n_null` random k-sets; the one-sided
    empirical `p_value` (floor 1 / (n_null + 1)) and the `effect_size` in null spreads."""

    statistic: float
    null_mean: float
    null_sd: float
    n_null: int
    p_value: float
    effect_size: float


class SpuriousChannelsEvidence(FindingEvidence):
    """The validated top-k `channels` of `layer` for the samples predicted as one class, their
    dropout effect, and their activation shift under the probe against random channel sets:
    `top_k_activation_drop`, the share of activation lost (`sum (m - m') / sum |m|`, < 0 a
    gain), the same for the dropout's random sets, `activation_collapse` = top-k minus their
    mean, `activation_test`, the standardised test against many random sets, and `decision`
    (both absent in findings stored before them); `counterfactual`, where the audit
    transplanted the cue (left out of the JSON otherwise)."""

    layer: str
    class_index: int
    class_name: str
    n_samples: int
    channels: list[int]
    dropout: DropoutEffect
    top_k_activation_drop: float
    random_k_activation_drop_mean: float
    random_k_activation_drops: list[float]
    activation_collapse: float
    thresholds: ChannelThresholds
    activation_test: ActivationShiftTest | None = None
    decision: Decision | None = None
    counterfactual: CounterfactualEvidence | None = None

    @model_serializer(mode="wrap")
    def _without_untested(self, handler: Any) -> dict[str, Any]:
        return _without_none(handler(self), "counterfactual")


class DriftSampleCounts(FindingEvidence):
    """Samples of the audit and of its baseline audit."""

    audit: int
    baseline: int


class ExplanationDriftEvidence(FindingEvidence):
    """One drifted explanation statistic (`auditor.audit.drift`): its value, its no-drift
    range at `confidence` over `n_replicates` bootstrap replicates, and the tolerated side
    (`bound`) of `threshold`, against the baseline audit."""

    statistic: str
    value: float
    no_drift_interval: tuple[float, float]
    confidence: float
    threshold: float
    bound: Literal["min", "max"]
    layer: str
    baseline_audit_id: int
    baseline_model_version: str | None
    model_version: str
    n_samples: DriftSampleCounts
    n_replicates: int


class UnlabeledSubclassEvidence(FindingEvidence):
    """A cluster of production samples (`auditor.checks.subclasses`): its statistics (see that
    module; None where undefined), the `signals` that flag it ("distance", "strategy"), up to
    `subclasses.evidence_samples` `members` nearest its centre with their nearest reference
    sample and distance to it, and the configured `thresholds`."""

    cluster: int
    size: int
    n_reference: int
    n_production: int
    reference_share: float
    predictions: dict[str, int]
    class_index: int
    class_name: str
    prediction_share: float
    confidence: float
    n_labelled: int
    label_purity: float | None
    error_rate: float | None
    member_distance: float | None
    reference_distance: float | None
    reference_members_distance: float | None
    distance_ratio: float | None
    profile_distance: float | None
    layer: str
    metric: str
    overall_reference_share: float
    signals: list[Literal["distance", "strategy"]]
    members: list[str]
    nearest_reference: list[str | None]
    member_distances: list[float]
    thresholds: dict[str, int | float]


class NovelClusterEvidence(FindingEvidence):
    """A cluster far from every reference sample whatever its prediction mix
    (`auditor.checks.novelty`): its reference share against the exact permutation null
    (`share_p_value`), the median distance of its production members to their nearest
    reference sample against `n_permutations` role permutations (`distance_p_value`,
    `distance_ratio` = observed / null median), the members' confidence against the reference
    samples' (`confidence_p_value`, one-sided Mann-Whitney), the false-alarm rate `alpha` the
    decision holds to, and up to `subclasses.evidence_samples` production `members` nearest the
    cluster's centre with their `nearest_reference` sample (any class) and the distance to it."""

    cluster: int
    size: int
    n_reference: int
    n_production: int
    reference_share: float
    overall_reference_share: float
    production_share: float
    share_p_value: float
    member_distance: float
    null_member_distance: float
    distance_ratio: float
    distance_p_value: float
    n_permutations: int
    confidence: float
    reference_confidence: float
    confidence_p_value: float
    predictions: dict[str, int]
    alpha: float
    max_reference_ratio: float
    layer: str
    metric: str
    members: list[str]
    nearest_reference: list[str]
    member_distances: list[float]


FINDING_KINDS.add(
    "probe_sensitivity",
    FindingKind(
        "removing a cue flips predictions well beyond a neutral perturbation of the same size",
        ProbeSensitivityEvidence,
    ),
)
FINDING_KINDS.add(
    "spurious_channels",
    FindingKind(
        "a class's validated top-k channels collapse under a probe of a non-semantic cue",
        SpuriousChannelsEvidence,
        channel_set="channels",
        fingerprint_fields=("class_index",),
    ),
)
FINDING_KINDS.add(
    "explanation_drift",
    FindingKind(
        "an explanation statistic moved past its threshold and sampling noise since the baseline",
        ExplanationDriftEvidence,
        fingerprint_fields=("statistic",),
    ),
)
FINDING_KINDS.add(
    "unlabeled_subclass",
    FindingKind(
        "confidently predicted production samples cluster away from the class's reference",
        UnlabeledSubclassEvidence,
        fingerprint_fields=("class_index",),
    ),
)
FINDING_KINDS.add(
    "novel_cluster",
    FindingKind(
        "production samples cluster far from every reference sample, whatever their predictions",
        NovelClusterEvidence,
    ),
)
