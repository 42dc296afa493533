"""Sharing Ratio Decomposition on the model graph [Han2024].

SRD explains with pointwise feature vectors (PFVs, the C-vector at one position of a map) on
pre-activation maps. Between two activation layers the network is affine; each
pre-activation PFV `v_j` is the sum of the contributions `v_hat_{i->j}` of the PFVs `v_i` in
its receptive field (eq. 5), and `v_i` holds the share `mu_{i->j} = <v_hat_{i->j}, v_j> /
||v_j||^2` of it (eq. 6). Relevance starts at the encoder output with the modified sharing
ratio of eq. 4 (`R^L_i = mu_{i->c}`, eq. 9) and is decomposed recursively,
`R_i = sum_j mu_{i->j} R_j` (eq. 7, 8), down to any layer or to the input pixels.

The rules bind to aten operations of the graph (BatchNorm folded into its convolution first):

* convolution: linear part by autograd (`<v_i, (W^T s)_i>`, one backward of the convolution),
  bias shared by the input PFVs' norms (eq. 11, `srd_ratios.bias_backward`); an unfolded
  inference BatchNorm is the same with a pointwise window (appendix B);
* max pooling: the indicator of eq. 12, i.e. its gradient; average pooling, reshapes: their
  gradient (exact, bias-free linear maps); consecutive affine maps compose (eq. 13);
* a product with a tensor outside the encoder: a constant (ConvNeXt's layer scale) or a gate
  (squeeze-excitation's `x * sigmoid(g)`, `x * hardsigmoid(g)`), held constant as LRP holds
  gates [Ali2022]: a per-channel scale of each PFV, bias-free and linear, so its gradient; the
  gate's branch is not part of the encoder and receives no relevance;
* residual addition: the summed PFV `v_j = u_j + u'_j` is one affine function of the PFVs of
  both branches' inputs (eq. 1 sums the ERFs of layers connected in parallel). Each branch's
  contribution vector `u_j` holds the share `<u_j, v_j> / ||v_j||^2`, and is decomposed
  into its own inputs' contributions `v_hat_{i->j}`, each projected on the same `v_j`, so
  that all ratios into `v_j` sum to 1 (eq. 6). Dividing a branch again by its own `||u_j||^2`
  would not be eq. 6 and explodes on near-cancelling branches; the projection on `v_j`
  passes the signal `s_j` unchanged to both branches (the gradient of the addition);
* activations (ReLU and the others of appendix G): relevance moves from the post-activation
  PFV `a_i`, `R_i = <a_i, g_i>`, to the pre-activation PFV `z_i` as the signal
  `R_i z_i / ||z_i||^2` (`srd_ratios.activation_backward`);
* the classifier head after the encoder output is only differentiated (eq. 4).

An encoder operation outside these rules is refused when SRD binds, before any pass, with one
line naming the operation, its node and its module path.

So the backward form (eq. 7-9) is one forward and one backward through the graph. The forward
form (eq. 1-3, Fig. 1) runs the same bindings in forward-mode AD over a basis of input
positions; appendix C's equivalence of the two forms is the transpose relation of each rule.

Relevance of a PFV maps to its channels as the terms of its inner product: channel `c` of
position `i` holds `t_ic g_ic`, where `g` is the SRD signal arriving at tensor `t`, so the
channels sum to the PFV's relevance. At a pre-activation map this is `R_i z_ic^2 / ||z_i||^2`
(eq. 6 with the channels as parts); at the input it is each colour channel's term of
`<x_i, (J^T s)_i>` plus its share of the first layer's bias.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.autograd.forward_ad as fwAD
from torch import fx

from auditor.errors import RelevanceError
from auditor.model.graph import (
    ModelGraph,
    describe_node,
    fold_batchnorm,
    gate_operand,
    head_start,
    input_dependent,
)
from auditor.model.ops import (
    ACTIVATION_OPS,
    BATCH_NORM_OPS,
    BIAS_FREE_LINEAR_OPS,
    CONV_OPS,
    HEAD_START_OPS,
    PRODUCT_OPS,
)
from auditor.relevance.base import RELEVANCE_METHODS, RelevanceMethod
from auditor.relevance.families import SRD_FAMILIES, supported_families
from auditor.relevance.srd_ratios import (
    POINTWISE,
    Window,
    activation_backward,
    activation_forward,
    bias_backward,
    bias_forward,
    class_sharing_ratios,
    projection,
    signal,
)

aten = torch.ops.aten


class _Activation(torch.autograd.Function):
    """Forward: the activation. Backward / forward-mode: SRD's activation-layer step."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, op: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        post = op(pre)
        ctx.save_for_backward(pre, post)
        ctx.save_for_forward(pre, post)
        return post

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return activation_backward(*ctx.saved_tensors, grad), None

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, _op: None) -> torch.Tensor:
        return activation_forward(*ctx.saved_tensors, tangent)


class _AddBias(torch.autograd.Function):
    """Forward: `linear + bias`. Backward / forward-mode: the linear part's signal unchanged,
    and the bias shared among the PFVs of the operation's input `x` (eq. 11)."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, linear: torch.Tensor, bias: torch.Tensor, window: Window
    ) -> torch.Tensor:
        ctx.save_for_backward(x, bias)
        ctx.save_for_forward(x, bias)
        ctx.window = window
        return linear + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        x, bias = ctx.saved_tensors
        return bias_backward(x, bias, grad, ctx.window), grad, None, None

    @staticmethod
    def jvp(ctx, x_t: torch.Tensor, linear_t: torch.Tensor, _b: None, _w: None) -> torch.Tensor:
        x, bias = ctx.saved_tensors
        return linear_t + bias_forward(x, x_t, bias, ctx.window)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


def _convolution(node: fx.Node, args: tuple) -> torch.Tensor:
    """Linear part by the convolution itself, bias by eq. 11 over the kernel's window."""
    if node.target is aten.convolution.default:
        x, weight, bias, stride, padding, dilation, transposed, _out_pad, groups = args
        if transposed:
            raise RelevanceError(
                f"SRD has no rule for the transposed convolution at node '{node.name}'",
                "audit a classifier without transposed convolutions in its encoder",
            )
    else:
        defaults = (None, (1, 1), (0, 0), (1, 1), 1)
        x, weight, bias, stride, padding, dilation, groups = (*args, *defaults[len(args) - 2 :])
    linear = aten.conv2d.default(x, weight, None, stride, padding, dilation, groups)
    if bias is None:
        return linear
    window = Window(tuple(weight.shape[-2:]), _pair(stride), _pair(padding), _pair(dilation))
    return _AddBias.apply(x, linear, bias, window)


def _batch_norm(node: fx.Node, args: tuple) -> torch.Tensor:
    """An inference BatchNorm left unfolded: scale each PFV, add the bias to it (appendix B)."""
    x, weight, bias, mean, var, training, _momentum, eps, *_ = args
    if training:
        raise RelevanceError(
            f"SRD cannot explain the training-mode BatchNorm at node '{node.name}'",
            "export the model in eval mode",
        )
    scale = torch.rsqrt(var + eps) * (weight if weight is not None else 1)
    shift = (bias if bias is not None else 0) - mean * scale
    return _AddBias.apply(x, x * scale.view(1, -1, 1, 1), shift, POINTWISE)


def _bind(
    node: fx.Node, args: tuple, kwargs: dict[str, Any], encoder: frozenset[fx.Node]
) -> torch.Tensor:
    """Run one encoder operation with its SRD rule (a residual sum needs both operands in the
    encoder: a constant summand would be a bias without a share)."""
    target = node.target
    if target in CONV_OPS:
        return _convolution(node, args)
    if target in BATCH_NORM_OPS:
        return _batch_norm(node, args)
    if target in ACTIVATION_OPS:
        first, *rest = args
        return _Activation.apply(first, lambda t: target(t, *rest, **kwargs))
    if target in PRODUCT_OPS and _has_rule(node, encoder):
        held = [
            a.detach() if isinstance(a, torch.Tensor) and i not in _encoder_operands(node, encoder) else a
            for i, a in enumerate(args)
        ]  # fmt: skip
        return target(*held, **kwargs)
    if _has_rule(node, encoder):
        return target(*args, **kwargs)
    raise _no_rule(node)


def _encoder_operands(node: fx.Node, encoder: frozenset[fx.Node]) -> list[int]:
    return [i for i, a in enumerate(node.args) if isinstance(a, fx.Node) and a in encoder]


def _has_rule(node: fx.Node, encoder: frozenset[fx.Node]) -> bool:
    """Whether SRD binds a rule to encoder operation `node` (a residual sum needs both operands
    in the encoder)."""
    target = node.target
    if target in CONV_OPS or target in BATCH_NORM_OPS or target in ACTIVATION_OPS:
        return True
    encoder_sum = target is aten.add.Tensor and all(a in encoder for a in node.args[:2])
    scaled = target is aten.mul.Tensor and len(_encoder_operands(node, encoder)) == 1
    return target in BIAS_FREE_LINEAR_OPS or encoder_sum or scaled


def _no_rule(node: fx.Node) -> RelevanceError:
    what = " with a constant operand" if node.target is aten.add.Tensor else ""
    return RelevanceError(
        f"SRD has no rule for {describe_node(node, what)}",
        "use lrp; " + supported_families("SRD", SRD_FAMILIES),
    )


class _SRDInterpreter(fx.Interpreter):
    """Runs the graph with the encoder's operations bound to SRD rules; records the encoder
    output and the value at `capture` (for an activation: its pre-activation input)."""

    def __init__(
        self,
        gm: fx.GraphModule,
        encoder: frozenset[fx.Node],
        last: fx.Node,
        capture: fx.Node | None,
    ):
        super().__init__(gm)
        self.encoder, self.last, self.capture = encoder, last, capture
        self.encoder_output: torch.Tensor | None = None
        self.captured: torch.Tensor | None = None

    def run_node(self, n: fx.Node) -> Any:
        if n.op != "call_function" or n not in self.encoder:
            value = super().run_node(n)
        else:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            value = _bind(n, args, kwargs, self.encoder)
            if n is self.capture:
                self.captured = args[0] if n.target in ACTIVATION_OPS else value
        if n is self.last:
            self.encoder_output = value
        return value


def _encoder(gm: fx.GraphModule) -> tuple[fx.Node, frozenset[fx.Node]]:
    """The encoder output (input of the first global pooling / flatten that separates the input
    from the logits) and the operations between the input and it (its ancestors that depend
    on the input, reached other than through a gate of a product; the others are constants)."""
    start = head_start(gm, HEAD_START_OPS)
    if start is None or not isinstance(start.args[0], fx.Node):
        raise RelevanceError(
            "SRD needs a convolutional encoder followed by global pooling or a flatten",
            "audit a CNN classifier",
        )
    output = start.args[0]
    dependent = {*input_dependent(gm), *(n for n in gm.graph.nodes if n.op == "placeholder")}
    ancestors: set[fx.Node] = set()
    stack = [output]
    while stack:
        node = stack.pop()
        if node not in ancestors:
            ancestors.add(node)
            gate = gate_operand(node) if node.target in PRODUCT_OPS else None
            stack.extend(
                a for a in node.all_input_nodes if gate is None or a is not node.args[gate]
            )
    return output, frozenset(ancestors & dependent)


def _targets(logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Explained class per sample: `target`, or the predicted class where None or negative."""
    predicted = logits.detach().argmax(dim=1)
    if target is None:
        return predicted
    target = target.to(logits.device)
    return torch.where(target >= 0, target, predicted)


@RELEVANCE_METHODS.register("srd")
class SRD(RelevanceMethod):
    """Sharing Ratio Decomposition (backward form, eq. 7-9; forward form, eq. 1-3).

    `attribute(x, target, layer)`: relevance of the PFVs of the input (N x C x H x W) or of
    module `layer`'s pre-activation output (its shape), split over channels as described in
    the module docstring; summed over channels it is the SRD map of that layer (SRD-input,
    SRD-high, SRD-low of the paper). Its total at every layer that separates the model equals
    the total of eq. 4 at the encoder output (sharing ratios into each PFV sum to 1).
    """

    supports_attention = False

    name: ClassVar[str] = "srd"
    description: ClassVar[str] = (
        "sharing ratio decomposition: relevance of pre-activation pointwise feature vectors, "
        "at the input or any layer (Han et al. 2024)"
    )

    def __init__(self, model: ModelGraph, **options: Any):
        if options:
            raise RelevanceError(
                f"SRD takes no options, got {', '.join(sorted(options))}", "remove them"
            )
        super().__init__(model)
        self.gm = fold_batchnorm(model.gm)
        self.output, self.encoder = _encoder(self.gm)
        unbound = [
            n for n in self.gm.graph.nodes
            if n in self.encoder and n.op == "call_function" and not _has_rule(n, self.encoder)
        ]  # fmt: skip
        if unbound:
            raise _no_rule(unbound[0])

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor | None = None, layer: str | None = None
    ) -> torch.Tensor:
        capture = None if layer is None else self._layer_node(layer)
        with torch.enable_grad():
            x, run, logits = self._run(inputs, capture)
            activation = run.encoder_output
            start = signal(activation.detach(), self._class_ratios(logits, activation, target))
            where = x if capture is None else run.captured
            (grad,) = torch.autograd.grad(activation, where, start)
        return (where * grad).detach()

    def effective_receptive_fields(
        self, inputs: torch.Tensor, layer: str | None = None
    ) -> torch.Tensor:
        """Forward form (eq. 1, 2; Fig. 1): the ERF of every PFV of `layer`'s pre-activation
        output (default: the encoder output) over the input positions, N x h x w x H x W.

        Input position `p` starts with the contribution `v_p` at `p` only (ERF = E^p, eq. 2);
        forward-mode AD carries all positions at once (the batch repeated H*W times), so this is
        for small inputs. Each ERF sums to 1 over the input positions.
        """
        capture = self.output if layer is None else self._layer_node(layer)
        n, _, height, width = inputs.shape
        positions = height * width
        basis = torch.eye(positions, dtype=inputs.dtype, device=inputs.device)
        tangent = (
            inputs.detach().unsqueeze(1) * basis.view(1, positions, 1, height, width)
        ).flatten(0, 1)
        primal = inputs.detach().repeat_interleave(positions, dim=0)
        run = self._interpreter(capture)
        with torch.no_grad(), fwAD.dual_level():
            run.run(fwAD.make_dual(primal, tangent))
            value, contribution = fwAD.unpack_dual(run.captured)
        erf = projection(value, contribution)
        return erf.view(n, height, width, *erf.shape[-2:]).permute(0, 3, 4, 1, 2)

    def attribute_forward(
        self, inputs: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forward form of the input map (eq. 3): `phi_c = sum_i mu_{i->c} ERF_i` over the PFVs
        of the encoder output, N x 1 x H x W; equals `attribute(...).sum(1)` (appendix C)."""
        with torch.enable_grad():
            _, run, logits = self._run(inputs, None)
            ratios = self._class_ratios(logits, run.encoder_output, target).detach()
        erfs = self.effective_receptive_fields(inputs)
        return torch.einsum("nij,nijpq->npq", ratios[:, 0], erfs).unsqueeze(1)

    def _interpreter(self, capture: fx.Node | None) -> _SRDInterpreter:
        return _SRDInterpreter(self.gm, self.encoder, self.output, capture)

    def _run(
        self, inputs: torch.Tensor, capture: fx.Node | None
    ) -> tuple[torch.Tensor, _SRDInterpreter, torch.Tensor]:
        """(input leaf, interpreter after the run, logits) with the SRD rules in the autograd graph."""
        x = inputs.detach().requires_grad_(True)
        run = self._interpreter(capture)
        logits = run.run(x)
        if run.encoder_output.dim() != 4:
            raise RelevanceError(
                f"SRD needs a 4-D encoder output, '{self.output.name}' has shape "
                f"{tuple(run.encoder_output.shape)}",
                "audit a CNN classifier",
            )
        return x, run, logits

    @staticmethod
    def _class_ratios(
        logits: torch.Tensor, activation: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Eq. 4 / eq. 9: `R^L_i = mu_{i->c}` from the gradient of `y^c - mean_k y^k`."""
        classes = logits.shape[1]
        weights = torch.nn.functional.one_hot(_targets(logits, target), classes).to(logits.dtype)
        (grad,) = torch.autograd.grad(logits, activation, weights - 1 / classes, retain_graph=True)
        return class_sharing_ratios(activation.detach(), grad)

    def _layer_node(self, layer: str) -> fx.Node:
        """The node of the folded graph holding module `layer`'s output (a BatchNorm's output is
        its convolution's, once folded)."""
        node = self.model.output_node(layer)
        nodes = {n.name: n for n in self.gm.graph.nodes}
        while node.name not in nodes:
            node = node.args[0]
        node = nodes[node.name]
        if node not in self.encoder:
            raise RelevanceError(
                f"layer '{layer}' is not in the encoder; SRD explains the operations from the "
                f"input to '{self.output.name}', the classifier head's input",
                "choose a layer of the convolutional encoder",
            )
        return node
