"""LRP rules [Bach2015, Montavon2019] (composites are in `auditor.relevance.composites`): the alpha-beta rule [Bach2015], the
zB and w^2 rules [Montavon2017], signal takes all for gated products [Arras2017].

A rule redistributes the relevance `R_j` of an operation's outputs onto its input. Every rule
here is a list of terms; a term is a modified operation `g` of "leaves" `a_k` derived from the
input (the input itself, its bounds, a tensor of ones), and contributes

    R_x += c * sum_k a_k * (dg/da_k)^T (R / stab(g(a))),    stab(z) = z + eps * sign(z)

([Montavon2019]: the activation times the sensitivity of a modified layer). The sum over
outputs is the vector-Jacobian product of `g`, so a term costs one backward of the operation
on its own kernel. LRP-0 and epsilon use `g` = the operation; the others modify its weights
and inputs.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from auditor.errors import RelevanceError

Op = Callable[..., torch.Tensor]
WeightedOp = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
Bound = float | tuple[float, ...]


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """`z + eps * sign(z)` with sign(+0) = +1 [Montavon2019, LRP-epsilon], in two passes."""
    return torch.copysign(z.new_tensor(epsilon), z).add_(z)


def divide(relevance: torch.Tensor, z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """`R / stab(z)`; with eps = 0 (LRP-0) an output with z = 0 passes no relevance."""
    denominator = stabilize(z, epsilon)
    if epsilon > 0:
        return relevance / denominator
    return torch.where(denominator == 0, 0.0, relevance / denominator)


@dataclass(frozen=True)
class Term:
    """A modified operation `g(a_1..a_K)`: input `owners[k]` receives
    `coefficient * a_k * (dg/da_k)^T (gate * R / stab(g(a)))`; `gate` (0/1 per output, all
    ones when None) picks the outputs whose relevance the term redistributes."""

    g: Op
    leaves: tuple[torch.Tensor, ...]
    owners: tuple[int, ...]
    coefficient: float = 1.0
    gate: torch.Tensor | None = None


class _Propagate(torch.autograd.Function):
    """Forward: the operation's true output. Backward: the input relevance of the terms."""

    @staticmethod
    def forward(ctx, op: Op | None, terms: Sequence[Term], epsilon: float, *inputs: torch.Tensor):
        with torch.enable_grad():
            leaves = [[a.detach().requires_grad_(True) for a in t.leaves] for t in terms]
            outputs = [t.g(*a) for t, a in zip(terms, leaves)]
        ctx.terms, ctx.leaves, ctx.outputs, ctx.epsilon = terms, leaves, outputs, epsilon
        ctx.count = len(inputs)
        return outputs[0].detach() if op is None else op(*inputs)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        result: list[torch.Tensor | None] = [None] * ctx.count
        for term, leaves, z in zip(ctx.terms, ctx.leaves, ctx.outputs):
            gated = relevance if term.gate is None else relevance * term.gate
            grads = torch.autograd.grad(z, leaves, divide(gated, z.detach(), ctx.epsilon))
            for owner, leaf, grad in zip(term.owners, leaves, grads):
                # a fresh tensor: autograd may hand the same gradient to several leaves
                share = leaf.detach() * grad
                if term.coefficient != 1.0:
                    share.mul_(term.coefficient)
                result[owner] = share if result[owner] is None else result[owner].add_(share)
        del ctx.terms, ctx.leaves, ctx.outputs
        return (None, None, None, *result)


def propagate(
    terms: Sequence[Term], epsilon: float, inputs: Sequence[torch.Tensor], op: Op | None = None
) -> torch.Tensor:
    """Apply a rule: the value is `op(*inputs)` (the first term's value when `op` is None, i.e.
    when that term is the operation itself); relevance flows back through `terms`."""
    return _Propagate.apply(op, terms, epsilon, *inputs)


def redistribute(op: Op, inputs: Sequence[torch.Tensor], epsilon: float) -> torch.Tensor:
    """Epsilon rule for an operation without weights (pooling, sums, affine batch norm, a
    product with its gate held constant): each input keeps its share of the output,
    `R_x = x * J^T (R / stab(z))` ([Montavon2019]; [Arras2017])."""
    return propagate([Term(op, tuple(inputs), tuple(range(len(inputs))))], epsilon, inputs)


def layer_norm(
    x: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    *,
    epsilon: float,
) -> torch.Tensor:
    """The LN rule of [Ali2022]: `y = w (x - E[x]) / [sqrt(eps + Var[x])] + b` with the
    deviation `[...]` held constant, so that `y` is linear in `x` (centring, then a per-position
    scale and the affine map); relevance by the epsilon rule over that linear map,
    `R_x = x * J^T (R / stab(y))`. Without bias it conserves: the centred values sum to the
    numerators. Its value is LayerNorm's."""
    dims = tuple(range(-len(normalized_shape), 0))
    deviation = torch.sqrt(x.detach().var(dims, unbiased=False, keepdim=True) + eps)

    def linear(a: torch.Tensor) -> torch.Tensor:
        y = (a - a.mean(dims, keepdim=True)) / deviation
        if weight is not None:
            y = y * weight
        return y if bias is None else y + bias

    return redistribute(linear, [x], epsilon)


class _PassRelevance(torch.autograd.Function):
    """An elementwise activation hands its output relevance to its input unchanged."""

    @staticmethod
    def forward(ctx, op: Op, x: torch.Tensor):
        return op(x)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        return None, relevance


def pass_relevance(op: Op, x: torch.Tensor) -> torch.Tensor:
    return _PassRelevance.apply(op, x)


@dataclass(frozen=True, kw_only=True)
class Rule(ABC):
    """An LRP rule for a weighted operation `fn(x, weight, bias)` (convolution, dense);
    `epsilon` stabilises its denominators."""

    epsilon: float = 1e-6
    #: whether the first term is the operation itself (its value is then reused as output)
    exact: ClassVar[bool] = False

    @abstractmethod
    def terms(
        self, fn: WeightedOp, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> list[Term]:
        """The rule's terms for input `x` of `fn(x, weight, bias)`."""

    def __call__(
        self, fn: WeightedOp, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        op = None if self.exact else (lambda inp: fn(inp, weight, bias))
        return propagate(self.terms(fn, x, weight, bias), self.epsilon, (x,), op)


def _on_input(
    g: Op, *leaves: torch.Tensor, coefficient: float = 1.0, gate: torch.Tensor | None = None
) -> Term:
    """A term all of whose leaves derive from the operation's one input."""
    return Term(g, leaves, (0,) * len(leaves), coefficient, gate)


@dataclass(frozen=True, kw_only=True)
class LRP0(Rule):
    """LRP-0: `R_i = sum_j x_i w_ij / z_j R_j`, `z_j = sum_i x_i w_ij + b_j` [Montavon2019].
    Equals gradient x input on ReLU networks."""

    epsilon: float = 0.0
    exact: ClassVar[bool] = True

    def terms(self, fn, x, weight, bias):
        return [_on_input(lambda a: fn(a, weight, bias), x)]


@dataclass(frozen=True, kw_only=True)
class Epsilon(LRP0):
    """LRP-epsilon: `R_i = sum_j x_i w_ij / (z_j + eps sign z_j) R_j` [Montavon2019]:
    weak and contradictory contributions are absorbed by eps."""

    epsilon: float = 1e-6


@dataclass(frozen=True, kw_only=True)
class Gamma(Rule):
    """LRP-gamma [Montavon2019]: contributions of the output's sign are favoured by `gamma`.

    Non-negative inputs (after a ReLU): `R_j = sum_k a_j (w_jk + gamma w_jk^+) /
    sum_{0,j} a_j (w_jk + gamma w_jk^+) R_k` (the sum includes the bias).

    Signed inputs (after SiLU, hardswish, leaky ReLU), the generalised rule: with
    `z_jk = a_j w_jk` and `z_k = sum_j z_jk + b_k` the output,
    `R_j = sum_{k: z_k > 0} (z_jk + gamma z_jk^+) / (z_k + gamma (sum_j z_jk^+ + b_k^+)) R_k
    + sum_{k: z_k < 0} (z_jk + gamma z_jk^-) / (z_k + gamma (sum_j z_jk^- + b_k^-)) R_k`:
    positive contributions come from (w^+, a^+) and (w^-, a^-), negative ones from (w^+, a^-)
    and (w^-, a^+), and each output's relevance goes through the part of its own sign (outputs
    with z_k = 0 pass none). On non-negative inputs it differs from the rule above only on
    negative outputs, where the rule above favours the positive contributions: that rule is
    kept there, as defined.

    `gamma = inf` is z+: `(z_jk)^+ / sum_j z_jk^+` (and `^-` for negative outputs on signed
    inputs), bias ignored [Bach2015]."""

    gamma: float = 0.25

    def favoured(self, weight: torch.Tensor, positive: bool) -> torch.Tensor:
        """`w + gamma w^+` (`positive`) or `w + gamma w^-`; `w^+` / `w^-` for gamma = inf."""
        part = weight.clamp(min=0) if positive else weight.clamp(max=0)
        return part if math.isinf(self.gamma) else weight + self.gamma * part

    def terms(self, fn, x, weight, bias):
        kept = None if bias is None or math.isinf(self.gamma) else bias
        if x.numel() == 0 or bool(x.min() >= 0):
            w = self.favoured(weight, True)
            b = None if kept is None else self.favoured(kept, True)
            return [_on_input(lambda a: fn(a, w, b), x)]
        z = fn(x, weight, bias)
        return [
            self._signed_term(fn, x, weight, kept, sign, (z > 0 if sign else z < 0).to(z.dtype))
            for sign in (True, False)
        ]

    def _signed_term(self, fn, x, weight, bias, positive: bool, gate: torch.Tensor) -> Term:
        """The contributions of one sign: `fn(a^+, w~, b~) + fn(a^-, w~')`, `w~` favouring
        that sign on positive inputs, `w~'` (the other weight part favoured) on negative."""
        on_positive, on_negative = (
            self.favoured(weight, positive),
            self.favoured(weight, not positive),
        )
        b = None if bias is None else self.favoured(bias, positive)
        g = lambda a: fn(a.clamp(min=0), on_positive, b) + fn(a.clamp(max=0), on_negative, None)
        return _on_input(g, x, gate=gate)


def _contributions(
    fn: WeightedOp, x: torch.Tensor, on_positive: torch.Tensor, on_negative: torch.Tensor
) -> Op:
    """`g(a) = fn(a^+, on_positive) + fn(a^-, on_negative)` without bias; a single
    convolution when the input is non-negative."""
    if x.numel() == 0 or bool(x.min() >= 0):
        return lambda a: fn(a, on_positive, None)
    return lambda a: fn(a.clamp(min=0), on_positive, None) + fn(a.clamp(max=0), on_negative, None)


@dataclass(frozen=True, kw_only=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta: `R_i = sum_j (alpha (x_i w_ij)^+ / sum_i' (x_i' w_i'j)^+
    - beta (x_i w_ij)^- / sum_i' (x_i' w_i'j)^-) R_j` with `alpha - beta = 1`, bias ignored
    ([Bach2015], with alpha = 1 + beta)."""

    alpha: float = 1.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        if not math.isclose(self.alpha - self.beta, 1.0) or self.beta < 0:
            raise RelevanceError(
                f"LRP alpha-beta needs alpha - beta = 1 and beta >= 0, got alpha={self.alpha}, "
                f"beta={self.beta}",
                "choose e.g. alpha=2, beta=1 or alpha=1, beta=0",
            )

    def terms(self, fn, x, weight, bias):
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        terms = [_on_input(_contributions(fn, x, w_pos, w_neg), x, coefficient=self.alpha)]
        if self.beta:
            terms.append(_on_input(_contributions(fn, x, w_neg, w_pos), x, coefficient=-self.beta))
        return terms


@dataclass(frozen=True, kw_only=True)
class ZPlus(AlphaBeta):
    """z+ = alpha1-beta0: `R_i = sum_j (x_i w_ij)^+ / sum_i' (x_i' w_i'j)^+ R_j` ([Bach2015],
    beta = 0); relevance keeps the sign of the output relevance."""

    alpha: float = field(default=1.0, init=False)
    beta: float = field(default=0.0, init=False)


@dataclass(frozen=True, kw_only=True)
class ZBox(Rule):
    """zB for a bounded input layer `low <= x <= high` [Montavon2017]: with
    `z_j = sum_i x_i w_ij - l_i w_ij^+ - h_i w_ij^-`,
    `R_i = sum_j (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) / z_j R_j`, bias ignored. Bounds are
    scalars or one value per input channel."""

    low: Bound = 0.0
    high: Bound = 1.0

    @classmethod
    def from_normalization(cls, mean: Bound, std: Bound, epsilon: float = 1e-6) -> ZBox:
        """Bounds of pixels in [0, 1] after `(x - mean) / std`: `l = -mean / std`,
        `h = (1 - mean) / std` per channel."""
        m, s = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
        low, high = (-m / s).tolist(), ((1 - m) / s).tolist()
        as_bound = lambda v: tuple(v) if isinstance(v, list) else v
        return cls(low=as_bound(low), high=as_bound(high), epsilon=epsilon)

    def terms(self, fn, x, weight, bias):
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        low, high = _bound(self.low, x), _bound(self.high, x)
        g = lambda a, lo, hi: fn(a, weight, None) - fn(lo, w_pos, None) - fn(hi, w_neg, None)
        return [_on_input(g, x, low, high)]


def _bound(value: Bound, x: torch.Tensor) -> torch.Tensor:
    """A scalar or per-channel bound broadcast to the shape of `x` (N x C x ...)."""
    bound = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if bound.dim() == 1:
        bound = bound.reshape(-1, *[1] * (x.dim() - 2))
    return bound.expand_as(x)


@dataclass(frozen=True, kw_only=True)
class WSquare(Rule):
    """w^2: `R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j`, independent of the input [Montavon2017]:
    leaf `a = 1`, `g(a) = fn(a, w^2)`, bias ignored."""

    def weight(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.square()

    def terms(self, fn, x, weight, bias):
        w = self.weight(weight)
        return [_on_input(lambda a: fn(a, w, None), torch.ones_like(x))]


@dataclass(frozen=True, kw_only=True)
class Flat(WSquare):
    """flat: w^2 with every weight 1, `R_i = sum_j 1 / |receptive field of j| R_j`: each
    output's relevance spread uniformly over its receptive field."""

    def weight(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(weight)
