"""The neutral control of a probe: the size of its change per image, and Gaussian noise of that
size (a perturbation as large as the probe's that removes no particular cue)."""

from __future__ import annotations

import torch


def change_norms(images: torch.Tensor, probed: torch.Tensor) -> torch.Tensor:
    """Per image, the L2 norm of the probe's change `||probed - images||`."""
    return (probed - images).flatten(start_dim=1).norm(dim=1)


def neutral_perturbation(images: torch.Tensor, size: torch.Tensor, seed: int) -> torch.Tensor:
    """Gaussian noise with, per image, the L2 norm `size` (the probe's change, from
    `change_norms`), clipped to [0, 1]: a perturbation of the same size that removes no
    particular cue."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    scale = size / noise.flatten(start_dim=1).norm(dim=1).clamp(min=1e-12)
    return (images + noise * scale.reshape(-1, 1, 1, 1)).clamp(0.0, 1.0)
