"""Layer-wise relevance propagation on the model graph [Bach2015, Montavon2019], with
"signal takes all" for gated products [Arras2017].

Rules bind to aten operations of the graph, not to module classes, so the same code explains
an eager module (exported), a `torch.export` program loaded from MLflow, and any graph cut
at a layer. The graph is canonized first (BatchNorm folded into the preceding convolution);
the forward pass runs each operation through its rule, whose backward returns the input
relevance, so one autograd backward propagates relevance from the logits to the input (LRP
flows along the graph as the gradient does [Montavon2019]):

* convolution, dense: the composite's rule; the model's first weighted operation (the input
  layer) gets the composite's input-layer rule (zB, flat) when the graph starts at the image;
* average pooling, means, sums, residual additions, a BatchNorm left unfolded: epsilon rule,
  each summand keeps its proportional share (a constant summand acts as a bias);
* products of two input-dependent tensors (gating, attention: `mul`, `div`, `matmul`, `bmm`):
  signal takes all [Arras2017] -- the gate (the operand computed by a sigmoid or
  softmax, the divisor, or the left factor `A` of `A @ V`) is held constant and the signal
  gets all relevance by the epsilon rule; a product with a constant passes relevance through.
  Inside attention this is CP-LRP [Ali2022] (the attention weights held constant); a composite
  with `attention="attnlrp"` gives matrix products of two input-dependent operands the
  uniform rule and softmax the softmax rule instead [Achtibat2024];
* LayerNorm: the standard deviation held constant, then epsilon [Ali2022, Achtibat2024];
* max pooling: winner takes all (its gradient);
* elementwise activations (SiLU, GELU, hardswish, ... and softmax outside AttnLRP): relevance
  passes unchanged, the identity rule of [Achtibat2024]; squeeze-excitation's `x * sigmoid(g)`
  and `x * hardsigmoid(g)` are gated products (above), the gate held constant [Ali2022];
* LayerNorm: the LN rule of [Ali2022], the deviation held constant so the layer is linear
  (centring, scale, bias), by the epsilon rule (AttnLRP's identity rule on the normalisation
  [Achtibat2024] is the same rule);
* views, reshapes, copies, concatenation, slicing: their gradient (a permutation of relevance;
  eval-mode dropout and in-place forms are gone from the canonical graph, `model.canonical`);
* an operation whose inputs do not depend on the explained input: a constant, computed as is.

An input-dependent operation outside these sets (`LRP_RULE_OPS`) is refused when the rules
bind, before any pass, with one line naming the operation, its node and its module path,
rather than producing silently wrong relevance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import fx

from auditor.errors import RelevanceError
from auditor.model.graph import (
    CUT_LAYER,
    ModelGraph,
    describe_node,
    fold_batchnorm,
    gate_operand,
    input_dependent,
    is_gate,
)
from auditor.model.ops import (
    ACTIVATION_OPS,
    LAYER_NORM_OPS,
    LRP_RULE_OPS,
    MATRIX_PRODUCT_OPS,
    PRODUCT_OPS,
    REDISTRIBUTED_OPS,
    ROUTED_OPS,
    SOFTMAX_OPS,
    SUM_OPS,
    WEIGHTED_OPS,
)
from auditor.relevance.base import RELEVANCE_METHODS, RelevanceMethod
from auditor.relevance.composites import ATTNLRP, Composite
from auditor.relevance.composites import composite as build_composite
from auditor.relevance.families import LRP_FAMILIES, supported_families
from auditor.relevance.rules import Bound, layer_norm, pass_relevance, redistribute
from auditor.relevance.transformer_rules import softmax_rule, uniform_product

aten = torch.ops.aten


def _conv2d(stride, padding, dilation, groups) -> Callable:
    return lambda x, w, b: aten.conv2d.default(x, w, b, stride, padding, dilation, groups)


def _weighted(
    target, args
) -> tuple[str, Callable, torch.Tensor, torch.Tensor, torch.Tensor | None]:
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
            raise RelevanceError(
                "LRP has no rule for transposed convolutions", "audit a classifier"
            )
        return "conv", _conv2d(stride, padding, dilation, groups), x, w, b
    if target is aten.linear.default:
        x, w, b = (*args, None)[:3]
        return "dense", aten.linear.default, x, w, b
    if target is aten.addmm.default:  # decomposed linear: bias + x @ w.T
        b, x, wt = args
        return "dense", aten.linear.default, x, wt.t(), b
    raise KeyError(target)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _dependent(value: Any) -> bool:
    """Whether `value` depends on the explained input (parameters are frozen, the input is not)."""
    return any(t.requires_grad for t in _tensors(value))


def _signal(node: fx.Node, target, args: tuple) -> int:
    """Index of the operand of a product that receives all relevance [Arras2017]."""
    if target is aten.div.Tensor:
        return 0
    dependent = [i for i in (0, 1) if _dependent(args[i])]
    if len(dependent) == 1:
        return dependent[0]
    gate = gate_operand(node)
    if gate is not None:
        return 1 - gate
    if target is not aten.mul.Tensor:
        return 1  # A @ V: the weights A on the left, the signal V on the right
    raise _no_gate(node)


def _undecided_products(dependent: list[fx.Node]) -> list[fx.Node]:
    """The elementwise products of two input-dependent operands of which not exactly one is a
    gate: `_signal` cannot choose, found when the rules bind rather than in the first pass."""
    inputs = set(dependent)
    return [
        n for n in dependent
        if n.target is aten.mul.Tensor
        and all(a in inputs for a in n.args[:2])
        and sum(is_gate(a) for a in n.args[:2]) != 1
    ]  # fmt: skip


def _no_gate(node: fx.Node) -> RelevanceError:
    return RelevanceError(
        f"LRP cannot tell the gate from the signal in the product, {describe_node(node)} "
        "(neither or both operands come from a sigmoid / softmax)",
        "audit a layer above it, or compute the gate with torch.sigmoid / torch.softmax",
    )


def _redistribute(target, args: tuple, kwargs: dict, positions: Sequence[int], epsilon: float):
    """Epsilon rule over the operands at `positions`; the other operands are constants."""
    fixed = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]

    def op(*inputs: torch.Tensor) -> torch.Tensor:
        operands = list(fixed)
        for position, value in zip(positions, inputs):
            operands[position] = value
        return target(*operands, **kwargs)

    return redistribute(op, [args[p] for p in positions], epsilon)


class _RelevanceInterpreter(fx.Interpreter):
    """Runs the graph with every operation bound to its LRP rule; keeps the values of the
    nodes named in `keep`."""

    def __init__(
        self, gm: fx.GraphModule, rules: Composite, input_layer: fx.Node | None, keep: Sequence[str]
    ):
        super().__init__(gm)
        self.rules = rules
        self.input_layer = input_layer
        self.keep = set(keep)
        self.kept: dict[str, Any] = {}
        self.node: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.node = n
        value = super().run_node(n)
        if n.name in self.keep:
            self.kept[n.name] = value
        return value

    def call_function(self, target, args, kwargs) -> Any:
        if not _dependent((args, kwargs)) or target in ROUTED_OPS:
            return target(*args, **kwargs)
        eps = self.rules.epsilon
        if target in WEIGHTED_OPS:
            kind, fn, x, w, b = _weighted(target, args)
            return self.rules.rule(kind, self.node is self.input_layer)(fn, x, w, b)
        if target in REDISTRIBUTED_OPS:
            return _redistribute(target, args, kwargs, [0], eps)
        if target in SUM_OPS:
            return _redistribute(
                target, args, kwargs, [i for i in (0, 1) if _dependent(args[i])], eps
            )
        attnlrp = self.rules.attention == ATTNLRP
        if target in MATRIX_PRODUCT_OPS and attnlrp and _dependent(args[0]) and _dependent(args[1]):
            return uniform_product(lambda a, b: target(a, b, **kwargs), args[0], args[1], eps)
        if target in PRODUCT_OPS:
            return _redistribute(target, args, kwargs, [_signal(self.node, target, args)], eps)
        if target in LAYER_NORM_OPS:
            return layer_norm(*args[:5], epsilon=eps)
        if target in SOFTMAX_OPS and attnlrp:
            first, *rest = args
            return softmax_rule(lambda t: target(t, *rest, **kwargs), first, eps)
        if target in ACTIVATION_OPS or target in SOFTMAX_OPS:
            first, *rest = args
            return pass_relevance(lambda t: target(t, *rest, **kwargs), first)
        raise _no_rule(self.node)


def _no_rule(node: fx.Node) -> RelevanceError:
    return RelevanceError(
        f"LRP has no rule for {describe_node(node)}",
        f"audit a layer above it; {supported_families('LRP', LRP_FAMILIES)}",
    )


def input_layer(gm: fx.GraphModule) -> fx.Node | None:
    """The model's first weighted operation, or None when the graph's input is an activation
    (a head cut at a layer)."""
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if any(CUT_LAYER in n.meta for n in inputs):
        return None
    return next(
        (n for n in gm.graph.nodes if n.op == "call_function" and n.target in WEIGHTED_OPS), None
    )


class LRP:
    """Layer-wise relevance propagation through a graph (`gm(x) -> logits`).

    `attribute(x, target)` returns the relevance of every element of `x` for the logit of
    `target` (default, and where a target is negative: the predicted class), starting from
    `R = f_target(x)` at the output so that, for conservative rules, the relevance sums to the
    explained logit.
    """

    def __init__(self, gm: fx.GraphModule, rules: Composite):
        self.gm = fold_batchnorm(gm)
        dependent = input_dependent(self.gm)
        unbound = [n for n in dependent if n.target not in LRP_RULE_OPS]
        if unbound:
            raise _no_rule(unbound[0])
        undecided = _undecided_products(dependent)
        if undecided:
            raise _no_gate(undecided[0])
        self.rules = rules
        self.input_layer = input_layer(self.gm)

    def relevance_at(
        self, x: torch.Tensor, nodes: Sequence[str] = (), target: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """([relevance at `x`, then at the output of each graph node in `nodes`], logits): one
        forward and one backward through the graph."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            interpreter = _RelevanceInterpreter(self.gm, self.rules, self.input_layer, nodes)
            logits = interpreter.run(x)
            missing = [name for name in nodes if name not in interpreter.kept]
            if missing:
                raise RelevanceError(f"the graph has no node {missing[0]}", "name a graph node")
            predicted = logits.detach().argmax(dim=1)
            target = predicted if target is None else torch.where(target >= 0, target, predicted)
            index = target.reshape(-1, 1).to(logits.device)
            start = torch.zeros_like(logits).scatter_(1, index, logits.detach().gather(1, index))
            values = [x, *(interpreter.kept[name] for name in nodes)]
            relevance = torch.autograd.grad(
                logits, values, start, allow_unused=True, materialize_grads=True
            )  # a gate receives no relevance
        return list(relevance), logits.detach()

    def attribute_with_logits(
        self, x: torch.Tensor, target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(relevance at `x`, logits); one forward and one backward through the graph."""
        (relevance,), logits = self.relevance_at(x, (), target)
        return relevance, logits

    def attribute(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.attribute_with_logits(x, target)[0]

    def attribute_from(self, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """Relevance at `x` for a given `relevance` at the graph's output (the shape of
        `gm(x)`) instead of a logit: e.g. one channel's share of the relevance at a layer,
        propagated through the trunk below it, gives that channel's input heatmap
        (channel-conditional relevance)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            output = _RelevanceInterpreter(self.gm, self.rules, self.input_layer, ()).run(x)
            (result,) = torch.autograd.grad(
                output, x, relevance.to(output.dtype), materialize_grads=True
            )
        return result


@RELEVANCE_METHODS.register("lrp")
class LRPMethod(RelevanceMethod):
    """LRP as a registered relevance method. At a layer, the trunk below it runs once without
    gradients and without the interpreter; only the head above it propagates relevance."""

    name = "lrp"
    description = "layer-wise relevance propagation with a rule composite (option composite=)"

    def __init__(
        self,
        model: ModelGraph,
        *,
        composite: str = "epsilon_plus",
        epsilon: float = 1e-6,
        gamma: float = 0.25,
        mean: Bound = 0.0,
        std: Bound = 1.0,
    ):
        super().__init__(
            model, composite=composite, epsilon=epsilon, gamma=gamma, mean=mean, std=std
        )
        self.rules = build_composite(composite, epsilon, gamma=gamma, mean=mean, std=std)
        self._engines: dict[str | None, tuple[fx.GraphModule | None, LRP]] = {
            None: (None, LRP(model.gm, self.rules))
        }  # binds the whole graph's rules now: an operation without one is refused up front

    def _engine(self, layer: str | None) -> tuple[fx.GraphModule | None, LRP]:
        if layer not in self._engines:
            split = self.model.split(layer)
            self._engines[layer] = (split.trunk, LRP(split.head, self.rules))
        return self._engines[layer]

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor | None = None, layer: str | None = None
    ) -> torch.Tensor:
        trunk, engine = self._engine(layer)
        if trunk is not None:
            with torch.no_grad():
                inputs = trunk(inputs)
        return engine.attribute(inputs, target)
