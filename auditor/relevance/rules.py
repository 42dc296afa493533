"""LRP rules for linear operations (seed 001, LRP rules; seed 000, case C).

A linear (or affine) operation `z_j = sum_i x_i w_ij + b_j` redistributes the relevance `R_j`
of its outputs to its inputs. Every rule here has the generic form

    R_i = x_i * sum_j dg_j/dx_i * R_j / stab(g_j(x)),    stab(z) = z + eps * sign(z)

where `g` is the operation with modified parameters (and inputs): LRP-0 and epsilon use the
operation itself, z+ (= alpha1-beta0) keeps only positive contributions
`g(x) = W+ x+ + W- x-`. The sum over `j` is the vector-Jacobian product of `g`, so a rule
costs one extra backward of the operation, computed by autograd on the operation's own kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Op = Callable[..., torch.Tensor]


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """`z + eps * sign(z)` with sign(0) = +1, so the denominator never vanishes."""
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


class _RuleFunction(torch.autograd.Function):
    """Forward: the operation's true output. Backward: the rule's input relevance."""

    @staticmethod
    def forward(ctx, op: Op, modified: Op | None, epsilon: float, *inputs: torch.Tensor):
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True) for x in inputs]
            z = (modified or op)(*leaves)
        ctx.leaves, ctx.z, ctx.epsilon = leaves, z, epsilon
        return z.detach() if modified is None else op(*inputs)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        scaled = relevance / stabilize(ctx.z.detach(), ctx.epsilon)
        grads = torch.autograd.grad(ctx.z, ctx.leaves, scaled)
        del ctx.z
        return (None, None, None, *(x.detach() * g for x, g in zip(ctx.leaves, grads)))


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


def redistribute(op: Op, inputs: Sequence[torch.Tensor], epsilon: float) -> torch.Tensor:
    """Epsilon rule for an operation without weights (pooling, residual sum, affine batch norm):
    each input keeps its share of the output, `R_x = x * J^T (R / stab(z))`."""
    return _RuleFunction.apply(op, None, epsilon, *inputs)


WeightedOp = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class Rule:
    """An LRP rule for a weighted operation `fn(x, weight, bias)` (convolution, dense)."""

    epsilon: float = 1e-6

    def modified(self, fn: WeightedOp, weight: torch.Tensor, bias: torch.Tensor | None) -> Op | None:
        """The operation `g` whose contributions are redistributed (None: the operation itself)."""
        return None

    def __call__(
        self, fn: WeightedOp, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        op = lambda inp: fn(inp, weight, bias)
        return _RuleFunction.apply(op, self.modified(fn, weight, bias), self.epsilon, x)


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon: `R_i = sum_j x_i w_ij / (z_j + eps sign z_j) R_j` (LRP-0 as eps -> 0)."""


@dataclass(frozen=True)
class ZPlus(Rule):
    """z+ (alpha1-beta0): only positive contributions `(x_i w_ij)^+`, bias ignored,
    `R_i = sum_j (x_i w_ij)^+ / sum_i' (x_i' w_i'j)^+ R_j`; relevance stays non-negative."""

    def modified(self, fn: WeightedOp, weight: torch.Tensor, bias: torch.Tensor | None) -> Op:
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        return lambda x: fn(x.clamp(min=0), w_pos, None) + fn(x.clamp(max=0), w_neg, None)
