"""Probes: transforms that remove one candidate cue while keeping the object (seed 000, case C:
grayscale removes colour). A probe's effect is judged against a neutral perturbation of the same
size, and by how much the top-k relevant channels lose their activation compared with random
channel sets ("compare forward pass activation statistics: original vs gray-scaled images for
relevant channels").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Probe = Callable[[torch.Tensor], torch.Tensor]

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Remove colour: BT.601 luminance `0.299 R + 0.587 G + 0.114 B` in every channel."""
    weights = torch.tensor(LUMINANCE, dtype=images.dtype).reshape(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True).expand_as(images).contiguous()


PROBES: dict[str, Probe] = {"grayscale": grayscale}


def neutral_perturbation(images: torch.Tensor, probed: torch.Tensor, seed: int) -> torch.Tensor:
    """Gaussian noise with, per image, the L2 norm of the probe's change, clipped to [0, 1]:
    a perturbation of the same size that removes no particular cue."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    size = (probed - images).flatten(start_dim=1).norm(dim=1)
    scale = size / noise.flatten(start_dim=1).norm(dim=1).clamp(min=1e-12)
    return (images + noise * scale.reshape(-1, 1, 1, 1)).clamp(0.0, 1.0)


def relative_drop(original: torch.Tensor, probed: torch.Tensor, channels: Sequence[int]) -> float:
    """Relative loss of the summed mean activation of a channel set under a probe,
    `(sum_c a_c - sum_c a'_c) / sum_c a_c`, clipped to [-1, 1] (1: silenced, 0: unchanged,
    -1: doubled or more). The clip keeps sets that are nearly silent on the original samples
    from dominating an average over random sets with huge negative values."""
    index = list(channels)
    before = float(original[index].sum())
    change = (before - float(probed[index].sum())) / max(abs(before), 1e-12)
    return min(1.0, max(-1.0, change))
