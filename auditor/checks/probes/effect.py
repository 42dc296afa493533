"""A probe's effect on channel activations: the relative activation drop of a channel set."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def relative_drop(original: torch.Tensor, probed: torch.Tensor, channels: Sequence[int]) -> float:
    """Relative loss of the summed mean activation of a channel set under a probe,
    `(sum_c a_c - sum_c a'_c) / sum_c a_c`, clipped to [-1, 1] (1: silenced, 0: unchanged,
    -1: doubled or more). The clip keeps sets that are nearly silent on the original samples
    from dominating an average over random sets with huge negative values."""
    index = list(channels)
    before = float(original[index].sum())
    change = (before - float(probed[index].sum())) / max(abs(before), 1e-12)
    return min(1.0, max(-1.0, change))
