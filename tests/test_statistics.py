"""Statistics of the dropout effect: bootstrap interval, empirical p-value, effect size."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.checks.findings import dropout_effect
from auditor.checks.statistics import (
    MIN_SPREAD,
    bootstrap_difference_ci,
    dropout_evidence,
    effect_size,
    empirical_p_value,
)
from auditor.results import ConditionMetrics, DropoutTable


def test_bootstrap_interval_covers_the_true_difference_at_about_the_nominal_rate():
    """200 synthetic audits of 40 paired samples: the 90 % interval holds the true difference
    of means (0.3) in about 90 % of them (binomial sd 2 %; the percentile bootstrap runs a
    little short at small n)."""
    rng = np.random.default_rng(0)
    covered = 0
    for sim in range(200):
        shared = rng.normal(size=40)  # per-sample difficulty, common to both conditions
        top = 0.5 + shared + rng.normal(scale=0.5, size=40)
        random = 0.2 + shared + rng.normal(scale=0.5, size=40)
        low, high = bootstrap_difference_ci(top, random, n_boot=400, confidence=0.9, seed=sim)
        covered += low <= 0.3 <= high
    assert 0.83 <= covered / 200 <= 0.96


def test_p_value_is_uniform_under_the_null():
    """Top-k exchangeable with the 19 random sets: p = 1/20, 2/20, ..., 1, each equally likely."""
    draws = np.random.default_rng(1).normal(size=(4000, 20))
    p = np.array([empirical_p_value(row[0], row[1:]) for row in draws])
    assert p.min() == pytest.approx(1 / 20) and p.max() == 1.0
    for level in (0.05, 0.25, 0.5, 0.75):
        assert np.mean(p <= level + 1e-9) == pytest.approx(level, abs=0.03)


def test_p_value_counts_ties_and_the_observed_value():
    assert empirical_p_value(1.0, np.array([0.0, 1.0, 2.0])) == pytest.approx(3 / 4)
    assert empirical_p_value(5.0, np.zeros(99)) == pytest.approx(1 / 100)


def test_effect_size_in_random_spreads_with_a_floor():
    assert effect_size(3.0, np.array([0.0, 2.0])) == pytest.approx((3.0 - 1.0) / np.sqrt(2))
    assert effect_size(0.5, np.full(5, 0.3)) == pytest.approx(0.2 / MIN_SPREAD)
    assert effect_size(0.5, np.array([0.3])) == pytest.approx(0.2 / MIN_SPREAD)


def _margins(rng: np.random.Generator, top_mean: float, n: int = 60, repeats: int = 19):
    shared = rng.normal(scale=0.1, size=n)
    top = top_mean + shared + rng.normal(scale=0.05, size=n)
    randoms = 0.1 + shared + rng.normal(scale=0.05, size=(repeats, n))
    return top, randoms


def test_strong_top_k_effect_is_significant():
    top, randoms = _margins(np.random.default_rng(2), top_mean=0.6)
    stats = dropout_evidence(top, randoms, seed=0, n_boot=500)
    assert stats.effect == pytest.approx(top.mean() - randoms.mean())
    assert 0.4 < stats.ci_low < stats.effect < stats.ci_high < 0.6
    assert stats.p_value == pytest.approx(1 / 20)  # the smallest possible with 19 random sets
    assert stats.effect_size > 20


def test_no_top_k_effect_is_not_significant():
    top, randoms = _margins(np.random.default_rng(3), top_mean=0.1)
    stats = dropout_evidence(top, randoms, seed=0, n_boot=500)
    assert stats.ci_low < 0 < stats.ci_high
    assert stats.p_value > 0.05
    assert abs(stats.effect_size) < 3


def test_dropout_evidence_is_deterministic_with_a_seed():
    top, randoms = _margins(np.random.default_rng(4), top_mean=0.3)
    first = dropout_evidence(top, randoms, seed=7, n_boot=300)
    assert dropout_evidence(top, randoms, seed=7, n_boot=300) == first
    other = dropout_evidence(top, randoms, seed=8, n_boot=300)
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    assert (other.effect, other.p_value) == (first.effect, first.p_value)


def test_dropout_evidence_needs_random_sets():
    with pytest.raises(ValueError, match="random-k"):
        dropout_evidence(np.zeros(5), np.zeros((0, 5)), seed=0)


def _condition(margin_drop: float) -> ConditionMetrics:
    return ConditionMetrics(
        accuracy=None, average_precision=None, flip_rate=0.0, logit_drop=0.0,
        n_samples=60, n_labelled=0, margin_drop=margin_drop,
    )


def test_findings_report_the_same_effect_size_as_the_dropout_statistics():
    """One effect size: the finding's dropout evidence and the dropout statistics of the same
    5 random sets agree (they used the population and the sample SD, ~12 % apart)."""
    rng = np.random.default_rng(5)
    top = rng.normal(0.5, 0.1, size=60)
    randoms = rng.normal(0.1, 0.1, size=(5, 60)) + rng.normal(0.0, 0.05, size=(5, 1))
    stats = dropout_evidence(top, randoms, seed=0, n_boot=200)
    table = DropoutTable(
        k=3,
        baseline=_condition(0.0),
        top_k=_condition(float(top.mean())),
        random_k=[_condition(float(row.mean())) for row in randoms],
        bottom_k=_condition(0.0),
        random_sets=[[0, 1, 2]] * 5,
        statistics=stats,
    )
    evidence = dropout_effect(table)
    assert evidence.effect_size == pytest.approx(stats.effect_size, rel=1e-12)
    assert evidence.effect_size == pytest.approx(effect_size(top.mean(), randoms.mean(axis=1)))
