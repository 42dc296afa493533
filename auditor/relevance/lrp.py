"""Layer-wise relevance propagation on the model graph (seed 001: LRP rules and composites).

Rules bind to aten operations of the graph, not to module classes, so the same code explains
an eager module (exported), a `torch.export` program loaded from MLflow, and any graph cut
at a layer. The graph is canonized first (BatchNorm folded into the preceding convolution);
the forward pass runs each operation through its rule, whose backward returns the input
relevance, so one autograd backward propagates relevance from the logits to the input:

* convolution, dense: the composite's rule (z+ on convolutions and epsilon on dense layers
  for `epsilon_plus`; epsilon everywhere for `epsilon`);
* average pooling, global mean, residual addition, a BatchNorm left unfolded: epsilon rule,
  i.e. each summand keeps its proportional share (residual additions distributed
  proportionally);
* max pooling: winner takes all (its gradient);
* elementwise activations: relevance passes unchanged;
* reshapes, concatenation, dropout: their gradient (a permutation of relevance).

An operation outside these sets stops the explanation with an error naming it, rather than
producing silently wrong relevance.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from auditor.errors import RelevanceError
from auditor.graph import fold_batchnorm
from auditor.relevance.rules import Epsilon, Rule, ZPlus, pass_relevance, redistribute

aten = torch.ops.aten


@dataclass(frozen=True)
class Composite:
    """Which LRP rule each kind of layer gets; `epsilon` also stabilises sums and pooling."""

    name: str
    conv: Rule
    dense: Rule
    epsilon: float


def composite(name: str, epsilon: float = 1e-6) -> Composite:
    """A named composite: `epsilon` (epsilon everywhere) or `epsilon_plus` (z+ on convolutions,
    epsilon on dense layers)."""
    if name == "epsilon":
        return Composite(name, Epsilon(epsilon), Epsilon(epsilon), epsilon)
    if name == "epsilon_plus":
        return Composite(name, ZPlus(epsilon), Epsilon(epsilon), epsilon)
    raise ValueError(f"unknown LRP composite '{name}' (known: epsilon, epsilon_plus)")


def _conv2d(stride, padding, dilation, groups) -> Callable:
    return lambda x, w, b: aten.conv2d.default(x, w, b, stride, padding, dilation, groups)


def _weighted(target, args) -> tuple[str, Callable, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(kind, fn(x, w, b), x, w, b) for a weighted operation's node arguments."""
    if target is aten.conv2d.default:
        x, w, b, *rest = (*args, *[None] * (7 - len(args)))
        stride, padding, dilation, groups = (
            r if r is not None else d for r, d in zip(rest, ([1, 1], [0, 0], [1, 1], 1))
        )
        return "conv", _conv2d(stride, padding, dilation, groups), x, w, b
    if target is aten.convolution.default:
        x, w, b, stride, padding, dilation, transposed, _out_pad, groups = args
        if transposed:
            raise RelevanceError("LRP has no rule for transposed convolutions", "audit a classifier")
        return "conv", _conv2d(stride, padding, dilation, groups), x, w, b
    if target is aten.linear.default:
        x, w, b = (*args, None)[:3]
        return "dense", aten.linear.default, x, w, b
    if target is aten.addmm.default:  # decomposed linear: bias + x @ w.T
        b, x, wt = args
        return "dense", aten.linear.default, x, wt.t(), b
    raise KeyError(target)


WEIGHTED = {aten.conv2d.default, aten.convolution.default, aten.linear.default, aten.addmm.default}
REDISTRIBUTED = {
    aten.adaptive_avg_pool2d.default,
    aten.avg_pool2d.default,
    aten.mean.dim,
    aten.batch_norm.default,
}
ACTIVATIONS = {
    aten.relu.default, aten.relu_.default, aten.leaky_relu.default, aten.sigmoid.default,
    aten.tanh.default, aten.gelu.default, aten.silu.default, aten.hardswish.default,
    aten.hardtanh.default, aten.elu.default,
}
ROUTED = {
    aten.max_pool2d.default, aten.max_pool2d_with_indices.default, aten.flatten.using_ints,
    aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.permute.default,
    aten.t.default, aten.transpose.int, aten.clone.default, aten.contiguous.default,
    aten.dropout.default, aten.squeeze.dim, aten.unsqueeze.default, aten.cat.default,
    aten.sym_size.int, aten.slice.Tensor, aten.select.int, aten.alias.default, operator.getitem,
}


class _RelevanceInterpreter(fx.Interpreter):
    """Runs the graph with every operation bound to its LRP rule."""

    def __init__(self, gm: fx.GraphModule, rules: Composite):
        super().__init__(gm)
        self.rules = rules

    def call_function(self, target, args, kwargs) -> Any:
        if target in WEIGHTED:
            kind, fn, x, w, b = _weighted(target, args)
            return (self.rules.conv if kind == "conv" else self.rules.dense)(fn, x, w, b)
        if target in REDISTRIBUTED:
            first, *rest = args
            return redistribute(lambda t: target(t, *rest, **kwargs), [first], self.rules.epsilon)
        if target is aten.add.Tensor and all(isinstance(a, torch.Tensor) for a in args[:2]):
            return redistribute(lambda a, b: target(a, b, *args[2:], **kwargs), args[:2], self.rules.epsilon)
        if target in ACTIVATIONS:
            first, *rest = args
            return pass_relevance(lambda t: target(t, *rest, **kwargs), first)
        if target in ROUTED:
            return target(*args, **kwargs)
        node = self.current_node if hasattr(self, "current_node") else None
        where = f" at node '{node.name}'" if node is not None else ""
        raise RelevanceError(
            f"LRP has no rule for operation {target}{where}",
            "audit a layer above it, or open an issue with the model's architecture",
        )

    def run_node(self, n: fx.Node) -> Any:
        self.current_node = n
        return super().run_node(n)


class LRP:
    """Layer-wise relevance propagation through a graph (`gm(x) -> logits`).

    `attribute(x, target)` returns the relevance of every element of `x` for the logit of
    `target` (default, and where a target is negative: the predicted class), starting from `R = f_target(x)` at the output so
    that, for conservative rules, the relevance sums to the explained logit.
    """

    def __init__(self, gm: fx.GraphModule, rules: Composite):
        self.gm = fold_batchnorm(gm)
        self.rules = rules

    def attribute_with_logits(
        self, x: torch.Tensor, target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(relevance at `x`, logits); one forward and one backward through the graph."""
        x = x.detach().requires_grad_(True)
        logits = _RelevanceInterpreter(self.gm, self.rules).run(x)
        predicted = logits.detach().argmax(dim=1)
        target = predicted if target is None else torch.where(target >= 0, target, predicted)
        index = target.reshape(-1, 1).to(logits.device)
        start = torch.zeros_like(logits).scatter_(1, index, logits.detach().gather(1, index))
        (relevance,) = torch.autograd.grad(logits, x, start)
        return relevance, logits.detach()

    def attribute(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.attribute_with_logits(x, target)[0]
