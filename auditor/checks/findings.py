"""Turn evidence into findings [Chandrasegaran2022], each decided by a test with a stated
false-alarm rate.

A validated top-k set alone is evidence, not a finding: every model relies on some channels.
Every test of an audit belongs to one family, corrected together by Holm's step-down procedure
[Aickin1996], so that the chance that an audit of a model without any such effect reports one
(the family-wise false-alarm rate) is at most `false_alarm_rate`:

* `probe_sensitivity`, one test per probe and predicted class: removing the cue flips the
  class's samples more than the probe's control (another class's change of the same kind and
  size, `auditor.checks.probes.neutral`) flips the same samples; exact one-sided McNemar test
  of the paired flips [McNemar1947]. A cue tied to one class moves that class toward the
  others; a generic perturbation does not, so the class asymmetry is the evidence. Minimum
  effect: the class's excess flip rate is at least `probe_excess_flip`.
* `spurious_channels`, one test per predicted class and non-semantic probe: the class's top-k
  channels are validated (dropping them costs more of the decision margin than dropping random
  channels: empirical p-value among the random sets, minimum effect `dropout_effect`) and they
  lose their activation under the probe (mean standardised loss against random channel sets,
  `auditor.checks.probes.effect`; minimum effect: the top-k loses at least
  `activation_collapse` of its activation). Both must hold: an intersection-union test [Berger1982], whose p-value
  is the larger of the two.

Severity says how large the effect is, every finding being significant at the stated rate:
`probe_sensitivity` high from an excess flip rate of 0.5 of the class, medium from 0.3, low
below; `spurious_channels` high when its probe is also a `probe_sensitivity` finding (the
channels respond to the cue and the decisions follow), medium otherwise.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from auditor.checks.statistics import effect_size, holm_adjusted
from auditor.evidence import (
    ActivationShiftTest,
    ChannelThresholds,
    ClassFlipsEvidence,
    Decision,
    DropoutEffect,
    DropoutTest,
    ProbeSensitivityEvidence,
    SpuriousChannelsEvidence,
)
from auditor.results import (
    ChannelTable,
    ClassAnalysis,
    ClassFlips,
    DropoutTable,
    Finding,
    ProbeResult,
    ProbeShift,
    Severity,
)


@dataclass(frozen=True)
class FindingThresholds:
    """When evidence is a finding (the config's `thresholds`): the stated family-wise
    `false_alarm_rate` of an audit's tests, and the minimum effects: the top-k margin drop
    beyond the random mean that validates a channel set, the class's flip rate beyond the
    control's that makes a probe sensitive, and the share of activation the top-k loses under
    a non-semantic probe."""

    dropout_effect: float
    probe_excess_flip: float
    activation_collapse: float
    false_alarm_rate: float = 0.05


def _severity(excess: float) -> Severity:
    return "high" if excess >= 0.5 else "medium" if excess >= 0.3 else "low"


def dropout_effect(dropout: DropoutTable) -> DropoutEffect:
    """The top-k margin drop against the random-k distribution ([Chandrasegaran2022]: top-k vs
    random-k vs bottom-k): difference to the random mean, standardised effect
    (`auditor.checks.statistics.effect_size`), and the top-k's rank."""
    random = [r.margin_drop for r in dropout.random_k]
    mean = statistics.fmean(random)
    tested = None if dropout.statistics is None else DropoutTest(**asdict(dropout.statistics))
    return DropoutEffect(
        statistics=tested,
        top_k_margin_drop=dropout.top_k.margin_drop,
        random_k_margin_drop_mean=mean,
        random_k_margin_drop_max=max(random),
        bottom_k_margin_drop=dropout.bottom_k.margin_drop,
        top_k_flip_rate=dropout.top_k.flip_rate,
        random_k_flip_rate_mean=statistics.fmean(r.flip_rate for r in dropout.random_k),
        effect=dropout.top_k.margin_drop - mean,
        effect_size=effect_size(dropout.top_k.margin_drop, np.array(random)),
    )


def validated(dropout: DropoutTable, thresholds: FindingThresholds) -> bool:
    """Top-k dropout hurts more than random-k by at least `dropout_effect` of the margin (the
    minimum effect; its significance is tested in the audit's family, `dropout_p_value`)."""
    return dropout_effect(dropout).effect >= thresholds.dropout_effect


def dropout_p_value(dropout: DropoutTable) -> float:
    """The top-k's empirical p-value among the random sets (1 when it was not tested)."""
    return 1.0 if dropout.statistics is None else dropout.statistics.p_value


def shift_is_loss(shift: ProbeShift, thresholds: FindingThresholds) -> bool:
    """The top-k loses activation under the probe: a positive standardised loss and at least
    `activation_collapse` of its activation (share lost over the channels' magnitudes; the
    minimum effect). Whether that is beyond random channel sets is the test's p-value, not a
    difference of shares: random sets of nearly silent channels can gain many times their
    activation, which would make any difference look large. A gain is never a loss."""
    test = shift.test
    return (
        test is not None
        and test.statistic > 0
        and shift.top_k_activation_drop >= thresholds.activation_collapse
    )


@dataclass(frozen=True)
class Test:
    """One test of the audit's family: its p-value against its `null` (`n_null` draws; None:
    exact), and whether its minimum effect is met."""

    p_value: float
    effect_met: bool
    null: str
    n_null: int | None


@dataclass(frozen=True)
class ProbeTest(Test):
    """A probe's flips on one predicted class against its control's."""

    probe: ProbeResult
    flips: ClassFlips


@dataclass(frozen=True)
class ChannelTest(Test):
    """A class's top-k under a non-semantic probe: validated and losing activation."""

    analysis: ClassAnalysis
    shift: ProbeShift


def _class_name(index: int, names: Sequence[str] | None) -> str:
    return names[index] if names and index < len(names) else str(index)


def _flips_evidence(flips: ClassFlips, names: Sequence[str] | None) -> ClassFlipsEvidence:
    return ClassFlipsEvidence(
        class_name=_class_name(flips.class_index, names),
        **{k: v for k, v in asdict(flips).items()},
    )


def probe_sensitivity(
    probe: ProbeResult,
    flips: ClassFlips,
    dropout: DropoutTable,
    thresholds: FindingThresholds,
    class_names: Sequence[str] | None,
    decision: Decision,
) -> Finding:
    """The `probe_sensitivity` finding of a probe whose flips on class `flips` exceed its
    control's (decided by `decision`)."""
    name = _class_name(flips.class_index, class_names)
    return Finding(
        kind="probe_sensitivity",
        severity=_severity(flips.excess),
        title=(
            f"{probe.name} flips {flips.flip_rate:.0%} of the samples predicted '{name}' "
            f"({probe.probed.flip_rate:.0%} of all); its control of the same kind and size "
            f"flips {flips.control_flip_rate:.0%} of them (p = {decision.adjusted_p_value:.2g}, "
            f"Holm over {decision.family_size} tests)"
        ),
        probe=probe.name,
        evidence=ProbeSensitivityEvidence(
            flip_rate=probe.probed.flip_rate,
            neutral_flip_rate=probe.neutral.flip_rate,
            excess_flip_rate=probe.probed.flip_rate - probe.neutral.flip_rate,
            margin_drop=probe.probed.margin_drop,
            neutral_margin_drop=probe.neutral.margin_drop,
            accuracy=probe.probed.accuracy,
            baseline_accuracy=dropout.baseline.accuracy,
            perturbation_norm=probe.perturbation_norm,
            threshold=thresholds.probe_excess_flip,
            class_index=flips.class_index,
            class_name=name,
            class_excess_flip_rate=flips.excess,
            per_class=[_flips_evidence(f, class_names) for f in probe.per_class],
            decision=decision,
        ),
    )


def spurious_channels(
    analysis: ClassAnalysis,
    shift: ProbeShift,
    layer: str,
    thresholds: FindingThresholds,
    probe_flagged: bool,
    decision: Decision,
) -> Finding:
    """The `spurious_channels` finding of a class whose validated top-k channels lose their
    activation under a probe that removes a non-semantic cue (decided by `decision`)."""
    random_mean = shift.top_k_activation_drop - shift.collapse
    test = shift.test
    return Finding(
        kind="spurious_channels",
        severity="high" if probe_flagged else "medium",
        title=(
            f"the {len(analysis.top_k)} most relevant channels of {layer} for class "
            f"'{analysis.class_name}' lose {shift.top_k_activation_drop:.0%} of their activation "
            f"under {shift.probe} (random channels: {_signed_share(random_mean)}; "
            f"p = {decision.adjusted_p_value:.2g}, Holm over {decision.family_size} tests)"
        ),
        probe=shift.probe,
        evidence=SpuriousChannelsEvidence(
            layer=layer,
            class_index=analysis.class_index,
            class_name=analysis.class_name,
            n_samples=analysis.n_samples,
            channels=analysis.top_k,
            dropout=dropout_effect(analysis.dropout),
            top_k_activation_drop=shift.top_k_activation_drop,
            random_k_activation_drop_mean=random_mean,
            random_k_activation_drops=shift.random_k_activation_drops,
            activation_collapse=shift.collapse,
            thresholds=ChannelThresholds(
                dropout_effect=thresholds.dropout_effect,
                activation_collapse=thresholds.activation_collapse,
            ),
            activation_test=None if test is None else ActivationShiftTest(**asdict(test)),
            decision=decision,
        ),
    )


def _signed_share(share: float) -> str:
    """A share of activation lost as text: "lose 12%" or "gain 30%"."""
    return f"lose {share:.0%}" if share >= 0 else f"gain {-share:.0%}"


def family_size(n_classes: int, n_probes: int, n_non_semantic: int) -> int:
    """Tests of an audit's family: per planned class, one per probe (`probe_sensitivity`) and
    one per non-semantic probe (`spurious_channels`)."""
    return n_classes * (n_probes + n_non_semantic)


def decide(tests: Sequence[Test], thresholds: FindingThresholds) -> list[tuple[Test, Decision]]:
    """Holm's correction over every test of the family; the tests whose adjusted p-value is at
    most `false_alarm_rate` and whose minimum effect is met, with their decision."""
    adjusted = holm_adjusted([t.p_value for t in tests]) if tests else []
    return [
        (
            test,
            Decision(
                p_value=test.p_value, adjusted_p_value=p, family_size=len(tests),
                false_alarm_rate=thresholds.false_alarm_rate, null=test.null, n_null=test.n_null,
            ),
        )
        for test, p in zip(tests, adjusted)
        if test.effect_met and p <= thresholds.false_alarm_rate
    ]


def probe_tests(
    probes: list[ProbeResult], classes: set[int], thresholds: FindingThresholds
) -> list[ProbeTest]:
    """Each probe on each analysed class: its paired McNemar test against the control."""
    return [
        ProbeTest(
            p_value=flips.p_value,
            effect_met=flips.excess >= thresholds.probe_excess_flip,
            null="the probe's control on the same samples (exact McNemar test)",
            n_null=None,
            probe=probe,
            flips=flips,
        )
        for probe in probes
        for flips in probe.per_class
        if flips.class_index in classes
    ]


def channel_tests(
    classes: list[ClassAnalysis], non_semantic: list[str], thresholds: FindingThresholds
) -> list[ChannelTest]:
    """Each class's top-k under each non-semantic probe: the intersection-union test of its
    dropout and its activation shift against random channel sets."""
    return [
        ChannelTest(
            p_value=max(dropout_p_value(analysis.dropout), shift.test.p_value),
            effect_met=validated(analysis.dropout, thresholds) and shift_is_loss(shift, thresholds),
            null="random channel sets: the larger p-value of the top-k's dropout and of its "
            "activation shift (intersection-union test)",
            n_null=shift.test.n_null,
            analysis=analysis,
            shift=shift,
        )
        for analysis in classes
        for shift in analysis.probe_shifts
        if shift.probe in non_semantic and shift.test is not None
    ]


def derive_findings(
    channels: ChannelTable,
    dropout: DropoutTable,
    probes: list[ProbeResult],
    classes: list[ClassAnalysis],
    thresholds: FindingThresholds,
    non_semantic: list[str],
    class_names: Sequence[str] | None = None,
) -> list[Finding]:
    """Every finding the evidence supports at the stated false-alarm rate: the family (each
    probe on each analysed class; each class's top-k under each non-semantic probe) decided
    together (`decide`); per probe one `probe_sensitivity` finding, for its most affected
    significant class, then the `spurious_channels` findings."""
    tests: list[Test] = [
        *probe_tests(probes, {a.class_index for a in classes}, thresholds),
        *channel_tests(classes, non_semantic, thresholds),
    ]
    decided = decide(tests, thresholds)
    sensitive: dict[str, tuple[ProbeTest, Decision]] = {}
    for test, decision in decided:
        if isinstance(test, ProbeTest):
            best = sensitive.get(test.probe.name)
            if best is None or test.flips.excess > best[0].flips.excess:
                sensitive[test.probe.name] = (test, decision)
    findings = [
        probe_sensitivity(t.probe, t.flips, dropout, thresholds, class_names, d)
        for t, d in sensitive.values()
    ]
    findings += [
        spurious_channels(
            t.analysis, t.shift, channels.layer, thresholds, t.shift.probe in sensitive, d
        )
        for t, d in decided
        if isinstance(t, ChannelTest)
    ]
    return findings
