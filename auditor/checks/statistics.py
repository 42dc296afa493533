"""How sure a decision is: bootstrap interval, empirical p-value, standardised effect of a
dropout; the exact McNemar test of paired flips; Holm's correction across an audit's tests.

[Chandrasegaran2022] validate the discovered top-k relevant channels by comparing the top-k
dropout with the mean of 5 random-k dropouts. Whether the gap is more than noise has two
sources of chance, and one statistic for each:

* which samples were audited: a percentile bootstrap over samples (Efron & Tibshirani 1993,
  "An Introduction to the Bootstrap", ch. 13) of the mean per-sample difference, top-k minus
  random-k (paired: both conditions drop channels on the same samples);
* which channels were drawn at random: the empirical p-value of the top-k mean among the
  random-k means, `p = (1 + #{r : d_r >= d_top}) / (1 + R)` (Davison & Hinkley 1997,
  "Bootstrap Methods and their Application", eq. 4.11; North et al. 2002, Am. J. Hum. Genet.
  71: the +1 keeps p > 0 and the test valid). With R random sets p >= 1 / (R + 1): 19 sets are
  needed before p can reach 0.05.

Pure numpy; every random draw comes from a `numpy.random.Generator` seeded by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import binom

from auditor.results import DropoutStatistics

#: floor of the random-k spread in `effect_size`: 1 % of the decision margin, so that random
#: sets that all cost (nearly) nothing do not turn any gap into an enormous effect
MIN_SPREAD = 0.01
_CHUNK_INDICES = 1 << 22  # resampling indices drawn at once (32 MiB), whatever N


def bootstrap_difference_ci(
    a: np.ndarray, b: np.ndarray, *, n_boot: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of `mean(a) - mean(b)` for paired per-sample values
    (`a[i]`, `b[i]` measured on sample i): resample samples with replacement `n_boot` times,
    take the `(1 - confidence) / 2` and `(1 + confidence) / 2` quantiles of the mean difference."""
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(differences)
    if n == 0:
        raise ValueError("bootstrap needs at least one sample")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_INDICES // n)
    means = np.concatenate(
        [
            differences[rng.integers(0, n, size=(min(chunk, n_boot - start), n))].mean(axis=1)
            for start in range(0, n_boot, chunk)
        ]
    )
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def empirical_p_value(observed: float, null: np.ndarray) -> float:
    """`(1 + #{null >= observed}) / (1 + len(null))`: the share of the null draws, the observed
    value counted among them, at least as large as the observed value (one-sided, upper)."""
    null = np.asarray(null, dtype=float)
    return float((1 + np.count_nonzero(null >= observed)) / (1 + len(null)))


def effect_size(observed: float, null: np.ndarray, min_spread: float = MIN_SPREAD) -> float:
    """`(observed - mean(null)) / max(sd(null), min_spread)`: the observed value's distance
    from the null draws in their sample standard deviations (ddof = 1; 0 for one draw)."""
    null = np.asarray(null, dtype=float)
    spread = float(np.std(null, ddof=1)) if len(null) > 1 else 0.0
    return float((observed - null.mean()) / max(spread, min_spread))


def dropout_evidence(
    dropout_per_sample_top: np.ndarray,
    per_sample_randoms: np.ndarray,
    seed: int,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> DropoutStatistics:
    """Statistics of a top-k dropout against random-k dropouts from per-sample margin drops:
    `dropout_per_sample_top` (N) under the top-k, `per_sample_randoms` (R x N) under each of
    R random sets (`auditor.checks.metrics.margin_lost`).

    effect = mean_i(top_i - mean_r random_ri); its bootstrap interval over samples; the p-value
    of mean_i(top_i) among the R set means mean_i(random_ri); the effect size of mean_i(top_i)
    against those set means."""
    top = np.asarray(dropout_per_sample_top, dtype=float)
    randoms = np.asarray(per_sample_randoms, dtype=float).reshape(-1, len(top))
    if len(randoms) == 0:
        raise ValueError("dropout evidence needs at least one random-k set")
    random_mean = randoms.mean(axis=0)
    low, high = bootstrap_difference_ci(
        top, random_mean, n_boot=n_boot, confidence=confidence, seed=seed
    )
    set_means = randoms.mean(axis=1)
    return DropoutStatistics(
        effect=float(top.mean() - random_mean.mean()),
        ci_low=low,
        ci_high=high,
        p_value=empirical_p_value(float(top.mean()), set_means),
        effect_size=effect_size(float(top.mean()), set_means),
        n_null=len(set_means),
    )


def mcnemar_p_value(discordant_for: int, discordant_against: int) -> float:
    """One-sided exact McNemar test [McNemar1947] of paired binary outcomes: with `b` pairs
    where only the first condition flipped and `c` where only the second did, `p =
    P(X >= b)`, `X ~ Binomial(b + c, 1/2)` (1 when no pair is discordant)."""
    b, n = int(discordant_for), int(discordant_for) + int(discordant_against)
    return float(binom.sf(b - 1, n, 0.5)) if n else 1.0


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values [Aickin1996]: sorted ascending `p_(1) <= ... <=
    p_(m)`, `p~_(j) = max_{i <= j} min(1, (m - i + 1) p_(i))`, in the input order. Rejecting
    every test with `p~ <= alpha` keeps the family-wise false-alarm rate (any false rejection
    among the m tests) at most alpha, whatever their dependence."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


def null_draws_for(family_size: int, alpha: float, headroom: float = 2.0) -> int:
    """The number of random draws R whose smallest empirical p-value, `1 / (R + 1)`, is
    `1 / headroom` of Holm's smallest level `alpha / family_size` (so a clear effect can be
    reported at the stated rate): `R = ceil(headroom * family_size / alpha) - 1`, at least 19."""
    return max(19, int(np.ceil(headroom * max(1, family_size) / alpha)) - 1)
