"""The control of a probe: a change of the same kind and size that has no relation to the
image's own cue -- the probe's change of an image predicted as another class, transplanted.

For image i (predicted class `y_i`) the control is `clip(x_i + t u_d, 0, 1)`, where `u_d =
probe(x_d) - x_d` is the change the probe makes to a donor image d predicted as another class
(seeded choice among a few donors per class) and `t` is solved so that the clipped change has
image i's own change norm, `||probe(x_i) - x_i||` (`clipped_noise_scale`). So the control is as
large as the probe's change on every image, it is a change the probe really makes (same kind:
frequency band, location, global or local), and it carries another class's cue, never the
image's own: a probe that removes a cue tied to class y moves class y toward the others, its
control does not. A Gaussian-noise twin of the same L2 norm is not neutral for global probes:
a brightness change spreads over every pixel, and noise of its norm destroys the image (on a
model whose shortcut was global brightness both flipped 48.5 % of predictions).

Why the transplant is neutral, per probe kind:

| probe | the control |
| --- | --- |
| `grayscale` | another class's colour removed (a chroma change as large, not aligned with the image's colours) |
| `blur`, `high_pass_removal`, `high_pass_only` | another class's fine texture / frequency band subtracted: a texture change of the same band and size, the image's own texture kept |
| `jpeg` | another class's compression residual |
| `border_mask` | another class's border change, in the same frame |
| `brightness_contrast` | another class's brightness / contrast change, scaled to the image's own: the same kind of global change, in a direction that does not undo the image's own cue |
| `patch_occlusion` | another class's fill change in the same cell |
| plug-in probes | the same, whatever their change |

With one predicted class only, donors come from that class (other images than the one
controlled); the control then also removes a cue the class shares, and says so by flipping as
much as the probe.
"""

from __future__ import annotations

import numpy as np
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


def donor_rows(predicted: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Up to `per_class` seeded rows of each predicted class (sorted): the donors of a probe's
    control."""
    rng = np.random.default_rng(seed)
    rows = [
        rng.choice(members, size=min(per_class, len(members)), replace=False)
        for members in (np.flatnonzero(predicted == c) for c in np.unique(predicted))
    ]
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=int)


def pick_donors(
    rows: np.ndarray, predicted: np.ndarray, donors: np.ndarray, seed: int
) -> np.ndarray:
    """For each sample `rows[j]`, the index into `donors` (sample rows) of its donor: a seeded
    choice among the donors predicted as another class, or among the other donors when no
    other class has any (and the sample itself when it is the only one)."""
    picks = np.empty(len(rows), dtype=int)
    for j, row in enumerate(rows):
        rng = np.random.default_rng([seed, int(row)])
        other = np.flatnonzero(predicted[donors] != predicted[row])
        if len(other) == 0:
            other = np.flatnonzero(donors != row)
        picks[j] = rng.choice(other) if len(other) else 0
    return picks


def transplanted_control(
    images: torch.Tensor, size: torch.Tensor, donor_changes: torch.Tensor
) -> torch.Tensor:
    """`clip(x + t u, 0, 1)` per image with `u` its donor's change (`donor_changes`, one per
    image) and `t` such that the clipped change has the L2 norm `size` (the image's own change
    under the probe); where the box cannot hold that norm along `u`, every moving pixel goes to
    the bound its sign points to. A donor the probe did not change gives no change."""
    x = images.flatten(start_dim=1).double()
    u = donor_changes.flatten(start_dim=1).double()
    t = clipped_noise_scale(x, u, size)
    return (x + t[:, None] * u).clamp(0.0, 1.0).to(images.dtype).reshape(images.shape)
