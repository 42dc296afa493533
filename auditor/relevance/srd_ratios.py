"""Sharing ratios of SRD [Han2024] on whole feature maps.

A pointwise feature vector (PFV) `v_i` is the C-vector at one spatial position `i` of a map
(N x C x H x W); every quantity here is computed for all positions at once with tensor
algebra and convolutions, never with loops over positions.

An affine region between activation layers maps the PFVs `v_i` of its inputs to the
pre-activation PFVs `v_j` of its output, `v_j = sum_i v_hat_{i->j}` (eq. 5). The sharing
ratio of `i` in `j` is the projection (eq. 6)

    mu_{i->j} = <v_hat_{i->j}, v_j> / ||v_j||^2,        sum_i mu_{i->j} = 1,

and relevance is decomposed as `R_i = sum_j mu_{i->j} R_j` (eq. 7, 8). Contracted with the
relevance, the projection needs only the *signal* `s_j = R_j v_j / ||v_j||^2` at the output:
`R_i = sum_j <v_hat_{i->j}, s_j>`. For the linear part of the region, `v_hat` is the
Jacobian block `J_ji v_i`, so `sum_j <J_ji v_i, s_j> = <v_i, (J^T s)_i>`: autograd's
vector-Jacobian product of the region (one backward of each convolution, the max-pool
indicator of eq. 12 included). The bias part (eq. 11) is `bias_backward` below. The forward
form (eq. 1, 2; appendix C) carries, for each input position `p`, the contribution tangent
`Q_p` (the share of `v_j` that stems from `p`) through the same linear maps
(forward-mode AD), and reads the ERF as the projection `<Q_p, v_j> / ||v_j||^2`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Window:
    """Receptive-field geometry of a sliding-window operation (convolution)."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)


#: each output PFV is formed from the input PFV at the same position (batch normalisation)
POINTWISE = Window((1, 1))


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """`num / den` where `den > 0`, else 0 (a zero vector holds no share)."""
    positive = den > 0
    return torch.where(positive, num / torch.where(positive, den, 1), 0)


def squared_norms(v: torch.Tensor) -> torch.Tensor:
    """`||v_i||^2` of every PFV: N x 1 x H x W (`vecdot` over the channel axis is faster on CPU
    than `linalg.vector_norm`, by an order of magnitude, or than multiply-and-sum)."""
    return torch.linalg.vecdot(v, v, dim=1).unsqueeze(1)


def pfv_norms(v: torch.Tensor) -> torch.Tensor:
    """`||v_i||` of every PFV: N x 1 x H x W."""
    return squared_norms(v).sqrt()


def pfv_relevance(v: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """`R_i = <v_i, g_i>` (eq. 7, 8 contracted): the relevance that PFV `v_i` collects from its
    projective field, where `g = J^T s` is the signal arriving at `v` (plus bias shares)."""
    return torch.linalg.vecdot(v, signal, dim=1).unsqueeze(1)


def signal(v: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """`s_j = R_j v_j / ||v_j||^2`: the relevance of PFV `v_j` as the signal whose inner product
    with any part `v_hat` of `v_j` is `mu R_j` (eq. 6, 7)."""
    return v * _safe_div(relevance, squared_norms(v))


def projection(v: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """`<part_j, v_j> / ||v_j||^2` (eq. 6): the share of a part of every PFV, N x 1 x H x W."""
    return _safe_div(pfv_relevance(v, part), squared_norms(v))


def _ones(window: Window, values: torch.Tensor) -> torch.Tensor:
    """A ones kernel per sample: the batch runs as the channels of one grouped convolution (a
    1-channel convolution over a batch is one to two orders of magnitude slower on CPU)."""
    kernel = torch.ones((1, 1, *window.kernel), dtype=values.dtype, device=values.device)
    return kernel.expand(values.shape[0], 1, *window.kernel)


def receptive_sums(values: torch.Tensor, window: Window) -> torch.Tensor:
    """`sum_{k in RF_j} values_k` for every output position `j` of a 1-channel map: a
    convolution with a ones kernel of the window's geometry (padded positions add zero)."""
    n = values.shape[0]
    sums = F.conv2d(
        values.reshape(1, n, *values.shape[2:]), _ones(window, values), None,
        window.stride, window.padding, window.dilation, n,
    )  # fmt: skip
    return sums.view(n, 1, *sums.shape[2:])


def projective_sums(values: torch.Tensor, window: Window, size: torch.Size) -> torch.Tensor:
    """`sum_{j: i in RF_j} values_j` for every input position `i` (input map of shape `size`):
    the transposed convolution (adjoint) of `receptive_sums`."""
    n = values.shape[0]
    sums = torch.nn.grad.conv2d_input(
        (1, n, *size[2:]), _ones(window, values), values.reshape(1, n, *values.shape[2:]),
        window.stride, window.padding, window.dilation, n,
    )  # fmt: skip
    return sums.view(n, 1, *size[2:])


def bias_backward(
    x: torch.Tensor, bias: torch.Tensor, grad: torch.Tensor, window: Window
) -> torch.Tensor:
    """Bias part of eq. 11, contracted with the output signal `grad` (= s, eq. 6).

    Input PFV `i` owns the share `b ||v_i|| / sum_{k in RF_j} ||v_k||` of the bias of every
    output PFV `j` in its projective field, so it collects the relevance
    `rho_i = ||v_i|| sum_{j: i in RF_j} <b, s_j> / sum_{k in RF_j} ||v_k||` (one convolution and
    one transposed convolution of 1-channel maps). Returned as the signal
    `v_i rho_i / ||v_i||^2`, so that `pfv_relevance(x, .)` yields `rho` and a share that lands on
    an intermediate PFV (after pooling) is split further by that PFV's own sharing ratios.
    An output whose receptive field holds only zero vectors (eq. 11 is 0/0) keeps no share.
    """
    norms = pfv_norms(x)
    per_output = _safe_div(
        pfv_relevance(grad, bias.view(1, -1, 1, 1)), receptive_sums(norms, window)
    )
    return x * _safe_div(projective_sums(per_output, window, x.shape), norms)


def bias_forward(
    x: torch.Tensor, tangent: torch.Tensor, bias: torch.Tensor, window: Window
) -> torch.Tensor:
    """Bias part of eq. 11 in the forward form: the contribution tangent of output PFV `j` gains
    `b sum_{i in RF_j} ERF_i ||v_i|| / sum_{k in RF_j} ||v_k||`, where `ERF_i` is the projection
    of the input tangent on `v_i` (the transpose of `bias_backward`)."""
    norms = pfv_norms(x)
    weighted = receptive_sums(projection(x, tangent) * norms, window)
    return bias.view(1, -1, 1, 1) * _safe_div(weighted, receptive_sums(norms, window))


def activation_backward(pre: torch.Tensor, post: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """An activation layer in the backward form: the post-activation PFV `a_i` collects
    `R_i = <a_i, g_i>` (eq. 8); relevance is defined on the pre-activation PFV `z_i`, whose
    decomposition into the previous region starts from the signal `R_i z_i / ||z_i||^2`
    (eq. 6). The activation function itself (ReLU or any other, appendix G) is not linearised."""
    return signal(pre, pfv_relevance(post, grad))


def activation_forward(
    pre: torch.Tensor, post: torch.Tensor, tangent: torch.Tensor
) -> torch.Tensor:
    """An activation layer in the forward form: the ERF of pre-activation PFV `z_j` is
    `<Q_j, z_j> / ||z_j||^2` (eq. 1 with eq. 6), and the post-activation PFV `a_j` enters the
    next region as its own contribution, `ERF_j a_j` (the transpose of `activation_backward`)."""
    return projection(pre, tangent) * post


def class_sharing_ratios(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Modified sharing ratio of the encoder output for class `c` (eq. 4), N x 1 x H x W:

        mu_{i->c} = max(Phi_i^c - mean_k Phi_i^k, 0),   Phi_i^c = sum_k alpha_k^c A_i^k,
        alpha_k^c = mean_i dy^c / dA_i^k.

    `Phi` is linear in the gradient, so `Phi^c - mean_k Phi^k` takes `grad`, the gradient of
    `y^c - mean_k y^k` with respect to `A`: one backward through the classifier head.
    """
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    return (alpha * activation).sum(dim=1, keepdim=True).clamp(min=0)
