"""Per-channel relevance scores of [Chandrasegaran2022], who identified what drives
universal counterfeit image detectors."""

from __future__ import annotations

import torch


def channel_scores(relevance: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """N x C scores from relevance `R[i, c, ...]` at a layer (N x C x H x W, or N x C).

    Normalised [Chandrasegaran2022]: `R_i[c] = sum_hw R[i,c,h,w]^+ / sum_chw |R[i,c,h,w]|`, the
    share of sample i's total absolute relevance that channel c holds as positive evidence
    (each row lies in [0, 1] and sums to at most 1). Otherwise the raw per-channel sum
    `sum_hw R[i,c,h,w]`.
    """
    flat = relevance.reshape(*relevance.shape[:2], -1)
    if not normalize:
        return flat.sum(dim=2)
    total = flat.abs().sum(dim=(1, 2)).unsqueeze(1)
    return flat.clamp(min=0).sum(dim=2) / total.clamp(min=torch.finfo(relevance.dtype).tiny)
