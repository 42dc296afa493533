"""The neutral control of a probe: the size of its change per image, and Gaussian noise of that
size (a perturbation as large as the probe's that removes no particular cue)."""

from __future__ import annotations

import torch


def change_norms(images: torch.Tensor, probed: torch.Tensor) -> torch.Tensor:
    """Per image, the L2 norm of the probe's change `||probed - images||`."""
    return (probed - images).flatten(start_dim=1).norm(dim=1)


def clipped_noise_scale(x: torch.Tensor, u: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Per row, the scale `t` with `||clip(x + t u, 0, 1) - x|| = size` (flattened images `x` in
    [0, 1], directions `u`; float64), solved exactly.

    Pixel i moves by `t |u_i|` until it reaches the bound its sign points to, at
    `b_i = d_i / |u_i|` (`d_i` the distance to that bound), and by `d_i` after. With the pixels
    sorted by `b_i`, on `[b_(k-1), b_(k)]` the squared change is
    `f(t)^2 = sum_{j<k} d_j^2 + t^2 sum_{j>=k} u_j^2`, continuous and non-decreasing: the first
    `k` with `f(b_(k))^2 >= size^2` gives `t = sqrt((size^2 - sum_{j<k} d_j^2) / sum_{j>=k} u_j^2)`.
    Where `size` exceeds `f(b_max)` (every pixel at its bound, the farthest the box allows along
    `u`) the norm cannot be reached and `t = b_max`."""
    moving = u != 0
    room = torch.where(moving, torch.where(u > 0, 1.0 - x, x), torch.zeros_like(x))
    reach = torch.where(moving, room / u.abs().clamp(min=1e-300), torch.zeros_like(x))
    reach, order = reach.sort(dim=1)
    room_sq = room.gather(1, order).square()
    u_sq = u.gather(1, order).square()
    saturated = room_sq.cumsum(dim=1) - room_sq  # sum_{j<k} d_j^2
    unsaturated = u_sq.flip(1).cumsum(dim=1).flip(1)  # sum_{j>=k} u_j^2
    at_breakpoints = saturated + reach.square() * unsaturated  # f(b_(k))^2
    target = size.double().square()
    k = torch.searchsorted(at_breakpoints.contiguous(), target[:, None].contiguous()).squeeze(1)
    inside = k < x.shape[1]
    k = k.clamp(max=x.shape[1] - 1)[:, None]
    solved = (
        (target - saturated.gather(1, k).squeeze(1)).clamp(min=0.0)
        / unsaturated.gather(1, k).squeeze(1).clamp(min=1e-300)
    ).sqrt()
    return torch.where(inside, solved, reach[:, -1])


def neutral_perturbation(images: torch.Tensor, size: torch.Tensor, seed: int) -> torch.Tensor:
    """Gaussian noise whose change after clipping to [0, 1] has, per image, the L2 norm `size`
    (the probe's change, from `change_norms`): a perturbation of the same size that removes no
    particular cue. The twin is `clip(x + t u, 0, 1)`, `u` a seeded Gaussian direction and `t`
    from `clipped_noise_scale` (scaling `u` to `size` before clipping would make the change
    smaller than the probe's wherever pixels lie near 0 or 1); where the box cannot hold a
    change of that size along `u`, every pixel goes to the bound its noise sign points to."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    x = images.flatten(start_dim=1).double()
    u = noise.flatten(start_dim=1).double()
    t = clipped_noise_scale(x, u, size)
    return (x + t[:, None] * u).clamp(0.0, 1.0).to(images.dtype).reshape(images.shape)
