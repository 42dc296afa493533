"""Quality metrics of attribution maps: faithfulness, localisation, complexity, robustness.

Pure functions on batches; each returns one value per sample (average over samples for the
batch figure). Attributions are N x C x H x W (summed over channels into an N x H x W map) or
N x H x W maps.

* `region_perturbation` / `aopc` [Samek2017]: remove
  square regions most-relevant-first and follow the target output; AOPC is the mean drop.
  Pixel flipping is the case `patch=1`. No clamping (not part of [Han2024]'s metrics).
* [Han2024, Section 4 and Appendix E (Table 2)], all computed "after clamping the attributions
  to [-1, 1]" (option `clamp`, default 1.0; None disables it). Clamping is applied to the
  channel-summed map, so attributions should be on the scale of that range (e.g. divided by
  their maximum absolute value) for the clamp to mean what it means in the paper:
  `pointing_game` (Zhang et al. 2018, eq. 24), `attribution_localisation` (Kohlbrenner et al.
  2020, eq. 25), `sparseness` (Gini index, Chalasani et al. 2020, eq. 26), `fidelity` (Bhatt et
  al. 2020) and `stability` (Alvarez-Melis & Jaakkola 2018, eq. 27).

Undefined values (an all-zero map, no positive relevance, constant fidelity inputs) are NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from auditor.relevance.method_inputs import patch_mask, resolve_target

Forward = Callable[[torch.Tensor], torch.Tensor]
Output = Literal["logit", "probability"]


def heatmaps(attributions: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """N x H x W maps: the channel sum of N x C x H x W attributions (N x H x W kept), clamped
    to [-clamp, clamp] when `clamp` is given."""
    maps = attributions.sum(dim=1) if attributions.dim() == 4 else attributions
    maps = maps.detach().float()
    return maps if clamp is None else maps.clamp(-clamp, clamp)


def _target_output(
    forward: Forward, inputs: torch.Tensor, target: torch.Tensor, output: Output
) -> torch.Tensor:
    """The target class's logit (or softmax probability) per sample."""
    with torch.no_grad():
        logits = forward(inputs)
    values = logits.softmax(dim=1) if output == "probability" else logits
    return values.gather(1, target.reshape(-1, 1)).squeeze(1)


def region_perturbation(
    forward: Forward,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    patch: int = 4,
    steps: int | None = None,
    fill: float | torch.Tensor = 0.0,
    output: Output = "logit",
) -> torch.Tensor:
    """N x (steps + 1) curve `f(x^(0)), ..., f(x^(steps))` (Samek et al. 2017, MoRF).

    The image is tiled into `patch` x `patch` regions scored by their mean (channel-summed)
    attribution; `x^(k)` has the k highest-scoring regions replaced by `fill` (a constant, or a
    tensor broadcast to `inputs`, e.g. a blurred copy). `f` is the target logit or probability
    (target: default predicted class, negative entries too). `steps` defaults to all regions.
    """
    with torch.no_grad():
        target = resolve_target(forward(inputs), target)
    ids = patch_mask(*inputs.shape[2:], patch).to(inputs.device).flatten()
    n_regions = int(ids.max()) + 1
    maps = heatmaps(attributions).flatten(1)
    sums = torch.zeros(len(inputs), n_regions, device=maps.device).index_add_(1, ids, maps)
    scores = sums / torch.bincount(ids, minlength=n_regions)
    rank = scores.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    pixel_rank = rank[:, ids].reshape(len(inputs), 1, *inputs.shape[2:])
    fill = torch.as_tensor(fill, dtype=inputs.dtype, device=inputs.device).expand_as(inputs)
    steps = n_regions if steps is None else min(steps, n_regions)
    curve = [
        _target_output(forward, torch.where(pixel_rank < k, fill, inputs), target, output)
        for k in range(steps + 1)
    ]
    return torch.stack(curve, dim=1)


def aopc(curve: torch.Tensor) -> torch.Tensor:
    """Area over the perturbation curve per sample (Samek et al. 2017, eq. 12):
    `AOPC = 1/(L+1) sum_{k=0..L} f(x^(0)) - f(x^(k))`; higher = the attribution found the
    evidence first ([Samek2017]: the curve falls fast)."""
    return (curve[:, :1] - curve).mean(dim=1)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of N x S tensors (NaN where a row is constant)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))


def fidelity(
    forward: Forward,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    subset_size: int = 200,
    n_subsets: int = 64,
    fill: float = 0.0,
    clamp: float | None = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """Fidelity ([Bhatt2020]; [Han2024, Appendix E]) per sample:
    `Corr_S( sum_{i in S} phi(x)_i , F(x) - F(x[x_S = fill]) )` over `n_subsets` random sets S
    of `subset_size` pixels (all channels of a pixel; the paper: 200 pixels set to 0), with F
    the target logit and phi the clamped map. The subsets depend only on `seed` and the image
    size (a local generator), so they are the same for every sample."""
    with torch.no_grad():
        logits = forward(inputs)
    target = resolve_target(logits, target)
    height, width = inputs.shape[2:]
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(n_subsets, height * width, generator=generator).argsort(dim=1)
    subsets = torch.zeros(n_subsets, height * width, dtype=torch.bool)
    subsets.scatter_(1, order[:, : min(subset_size, height * width)], True)
    subsets = subsets.to(inputs.device)
    maps = heatmaps(attributions, clamp).flatten(1)
    relevance = maps @ subsets.T.float()
    full = logits.gather(1, target.reshape(-1, 1)).squeeze(1)

    def drop(subset: torch.Tensor) -> torch.Tensor:
        removed = inputs.masked_fill(subset.view(1, 1, height, width), fill)
        return full - _target_output(forward, removed, target, "logit")

    drops = torch.stack([drop(subset) for subset in subsets], dim=1)
    return _pearson(relevance, drops)


def pointing_game(
    attributions: torch.Tensor,
    masks: torch.Tensor,
    *,
    tolerance: int = 0,
    clamp: float | None = 1.0,
) -> torch.Tensor:
    """Pointing game hit per sample ([Zhang2018]; [Han2024, eq. 24]: `hits / (hits +
    misses)` over samples): whether the maximum of the clamped map lies in the ground-truth
    mask (N x H x W bool) grown by `tolerance` pixels (a square neighbourhood; the paper uses a
    15 px margin). Ties (common after clamping) count as the fraction of tied maxima inside."""
    maps = heatmaps(attributions, clamp)
    region = masks.reshape(maps.shape).float().unsqueeze(1)
    if tolerance > 0:
        region = F.max_pool2d(region, 2 * tolerance + 1, stride=1, padding=tolerance)
    inside = region.squeeze(1).bool().flatten(1)
    flat = maps.flatten(1)
    maxima = flat == flat.max(dim=1, keepdim=True).values
    return (maxima & inside).sum(dim=1) / maxima.sum(dim=1)


def attribution_localisation(
    attributions: torch.Tensor, masks: torch.Tensor, *, clamp: float | None = 1.0
) -> torch.Tensor:
    """Attribution localisation per sample ([Kohlbrenner2020]; [Han2024, eq. 25]):
    `R_in / R_tot`, the positive relevance inside the mask over the positive relevance in the
    image, on the clamped map."""
    positive = heatmaps(attributions, clamp).clamp(min=0).flatten(1)
    inside = masks.reshape(len(positive), -1).bool()
    return (positive * inside).sum(dim=1) / positive.sum(dim=1)


def sparseness(attributions: torch.Tensor, *, clamp: float | None = 1.0) -> torch.Tensor:
    """Sparseness per sample ([Chalasani2020]; [Han2024, eq. 26]): the Gini index
    `1 - 2 sum_k v_(k) / ||v||_1 * (d - k + 0.5) / d` of `v = |clamped map|` sorted ascending;
    ~1 for a one-hot map (exactly 1 - 1/d), 0 for a uniform one."""
    values = heatmaps(attributions, clamp).abs().flatten(1).sort(dim=1).values
    d = values.shape[1]
    k = torch.arange(1, d + 1, dtype=values.dtype, device=values.device)
    weights = (d - k + 0.5) / d
    return 1 - 2 * (values * weights).sum(dim=1) / values.sum(dim=1)


def stability(
    explain_fn: Forward,
    inputs: torch.Tensor,
    *,
    noise_std: float = 0.1,
    n_samples: int = 8,
    clamp: float | None = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """Stability per sample ([AlvarezMelis2018]; [Han2024, eq. 27]; lower = more
    stable): `max_j ||phi(x) - phi(x + n_j)||_2 / ||n_j||_2` over `n_samples` Gaussian
    perturbations `n_j ~ N(0, noise_std^2)` (the paper: std 0.1), phi the clamped map of
    `explain_fn` (inputs -> attributions; bind the target in it to explain a fixed class). The
    noise comes from a local generator seeded with `seed` and is the same for every sample."""
    generator = torch.Generator().manual_seed(seed)
    reference = heatmaps(explain_fn(inputs), clamp).flatten(1)
    worst = torch.zeros(len(inputs), device=inputs.device)
    for _ in range(n_samples):
        noise = torch.randn(inputs.shape[1:], generator=generator).to(inputs) * noise_std
        perturbed = heatmaps(explain_fn(inputs + noise), clamp).flatten(1)
        ratio = (reference - perturbed).norm(dim=1) / noise.norm()
        worst = torch.maximum(worst, ratio)
    return worst
