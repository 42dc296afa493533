"""What attribution methods get besides the model: targets, baselines, patch masks, seeding."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from auditor.errors import RelevanceError


def resolve_target(logits: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
    """Class index per sample: `target`, with the predicted class where it is None or negative."""
    predicted = logits.detach().argmax(dim=1)
    if target is None:
        return predicted
    target = torch.as_tensor(target, device=predicted.device).reshape(-1).expand_as(predicted)
    return torch.where(target >= 0, target, predicted)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the CPU torch generator seeded, restoring the global RNG state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def patch_mask(height: int, width: int, patch: int) -> torch.Tensor:
    """1 x 1 x H x W feature ids of square `patch` x `patch` tiles, row-major (border tiles
    are cut to the image)."""
    rows = torch.arange(height) // patch
    cols = torch.arange(width) // patch
    per_row = -(-width // patch)
    return (rows[:, None] * per_row + cols[None, :]).reshape(1, 1, height, width)


def baseline(inputs: torch.Tensor, kind: str | float | torch.Tensor) -> torch.Tensor:
    """The reference input x0: "zeros", "mean" (each sample's per-channel spatial mean, so it
    does not depend on the rest of the batch), a constant, or a tensor broadcast to `inputs`
    (one C x H x W image for sampling methods, which explain one sample at a time)."""
    inputs = inputs.detach()
    if isinstance(kind, torch.Tensor):
        return kind.to(inputs).expand_as(inputs)
    if kind == "zeros":
        return torch.zeros_like(inputs)
    if kind == "mean":
        return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs)
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return torch.full_like(inputs, float(kind))
    raise RelevanceError(
        f"unknown baseline {kind!r}", 'use "zeros", "mean", a number or a tensor like the inputs'
    )
