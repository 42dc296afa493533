"""Per-channel relevance scores (seed 000, case C)."""

from __future__ import annotations

import torch


def channel_scores(relevance: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """N x C scores from relevance maps `R[i, c, h, w]`.

    Normalised (seed 000): `R_i[c] = sum_hw R[i,c,h,w]^+ / sum_chw |R[i,c,h,w]|`, the share of
    sample i's total absolute relevance that channel c holds as positive evidence. Otherwise
    the raw per-channel sum `sum_hw R[i,c,h,w]`.
    """
    flat = relevance.flatten(start_dim=2)
    if not normalize:
        return flat.sum(dim=2)
    total = relevance.abs().flatten(start_dim=1).sum(dim=1, keepdim=True)
    return flat.clamp(min=0).sum(dim=2) / total.clamp(min=torch.finfo(relevance.dtype).tiny)
