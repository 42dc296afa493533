"""The gradient family of relevance methods (Captum), from saliency to SmoothGrad.

Formulas (f = target logit, u = activation of a layer):

* `saliency` (sensitivity [Simonyan2014]: `r_d = (df/dx_d)^2`): the squared gradient; Captum
  `Saliency(abs=False)` gives the signed gradient, squared here.
* `gradient_x_input` ([Shrikumar2016]: `r_d = x_d df/dx_d`): Captum `InputXGradient`; at a
  layer `u * df/du` (`LayerGradientXActivation`).
* `integrated_gradients` ([Sundararajan2017]: `R_d = (x_d - x0_d) mean_k df/dx_d` along the
  straight path from the baseline x0 to x): Captum `IntegratedGradients` /
  `LayerIntegratedGradients` (the path is then between the activations of x0 and of x).
* `smoothgrad` ([Smilkov2017]: `M^(x) = 1/K sum_k M(x + n_k)`, `n_k ~ N(0, s^2)`):
  Captum `NoiseTunnel` over `saliency` (mean of squared gradients, Captum's `smoothgrad_sq` on
  the raw gradient), `gradient_x_input` or `integrated_gradients`; `s = noise_level * (max(x)
  - min(x))` per sample [Smilkov2017].
* `guided_backprop` [Springenberg2015]: the gradient with every ReLU's backward zeroing
  the incoming gradient where the ReLU input is negative or the incoming gradient is
  negative. Captum's `GuidedBackprop` hooks `nn.ReLU` modules, which an aten graph does not
  have, so the graph's `aten.relu` nodes are rewritten to a guided ReLU autograd function.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from captum.attr import (
    Attribution,
    InputXGradient,
    IntegratedGradients,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from torch import fx, nn

from auditor.errors import RelevanceError
from auditor.model.graph import ModelGraph
from auditor.model.ops import RELU_OPS
from auditor.relevance.base import RELEVANCE_METHODS
from auditor.relevance.captum_method import CaptumMethod
from auditor.relevance.method_inputs import baseline


def guided_relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU whose backward passes `g * [x > 0] * [g > 0]` (guided backprop [Springenberg2015])."""
    return _GuidedReLU.apply(x)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


def guided_graph(model: ModelGraph) -> ModelGraph:
    """A copy of `model` whose `aten.relu` nodes call `guided_relu` (module paths kept)."""
    gm = fx.GraphModule(model.gm, copy.deepcopy(model.gm.graph))
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in RELU_OPS:
            node.target = guided_relu
    gm.recompile()
    return ModelGraph(gm)


class _Gradient(CaptumMethod):
    """The gradient `df/dx` (or `df/du` at a layer)."""

    def explainer(self, forward: nn.Module, layer: nn.Module | None) -> Attribution:
        if layer is None:
            return Saliency(forward)
        return LayerGradientXActivation(forward, layer, multiply_by_inputs=False)

    def call_options(self, inputs: torch.Tensor, layer: nn.Module | None) -> dict[str, Any]:
        return {"abs": False} if layer is None else {}


@RELEVANCE_METHODS.register("saliency")
class SquaredGradient(_Gradient):
    """Sensitivity `(df/dx_d)^2` [Simonyan2014]."""

    name = "saliency"
    description = "sensitivity: squared gradient of the target logit"
    #: NoiseTunnel smoothing that averages this method's result over noisy inputs
    nt_type: ClassVar[str] = "smoothgrad_sq"

    def finish(
        self, attributions: torch.Tensor, inputs: torch.Tensor, layer: nn.Module | None
    ) -> torch.Tensor:
        return attributions.square()


@RELEVANCE_METHODS.register("guided_backprop")
class GuidedBackprop(_Gradient):
    """Guided backprop [Springenberg2015] on a copy of the graph with guided ReLUs."""

    supports_attention = False

    name = "guided_backprop"
    description = "gradient with ReLU backward passing only positive gradients of active units"

    def __init__(self, model: ModelGraph, **options: Any):
        super().__init__(model, **options)
        self._guided = guided_graph(model)

    def graph(self) -> ModelGraph:
        return self._guided


@RELEVANCE_METHODS.register("gradient_x_input")
class GradientXInput(CaptumMethod):
    """`x * df/dx` [Shrikumar2016]; at a layer `u * df/du`."""

    name = "gradient_x_input"
    description = "gradient times input (times activation at a layer)"
    nt_type: ClassVar[str] = "smoothgrad"

    def explainer(self, forward: nn.Module, layer: nn.Module | None) -> Attribution:
        if layer is None:
            return InputXGradient(forward)
        return LayerGradientXActivation(forward, layer)


@RELEVANCE_METHODS.register("integrated_gradients")
class IntegratedGradientsMethod(CaptumMethod):
    """Integrated gradients [Sundararajan2017], Gauss-Legendre quadrature with `steps` nodes."""

    name = "integrated_gradients"
    description = "integrated gradients from a baseline (zeros, per-channel mean, constant, tensor)"
    defaults: ClassVar[dict[str, Any]] = {
        "baseline": "zeros",
        "steps": 50,
        "internal_batch_size": None,
    }
    nt_type: ClassVar[str] = "smoothgrad"

    def explainer(self, forward: nn.Module, layer: nn.Module | None) -> Attribution:
        if layer is None:
            return IntegratedGradients(forward)
        return LayerIntegratedGradients(forward, layer)

    def call_options(self, inputs: torch.Tensor, layer: nn.Module | None) -> dict[str, Any]:
        return {
            "baselines": baseline(inputs, self.options["baseline"]),
            "n_steps": int(self.options["steps"]),
            "internal_batch_size": self.options["internal_batch_size"],
        }


SMOOTHGRAD_BASES = {"saliency": SquaredGradient, "gradient_x_input": GradientXInput,
                    "integrated_gradients": IntegratedGradientsMethod}  # fmt: skip


@RELEVANCE_METHODS.register("smoothgrad")
class SmoothGrad(CaptumMethod):
    """SmoothGrad [Smilkov2017] of a base method; options other than its own go to the
    base (e.g. `steps`, `baseline` for integrated gradients)."""

    name = "smoothgrad"
    description = (
        "base method (saliency, gradient_x_input, integrated_gradients) averaged over noisy inputs"
    )
    stochastic = True
    own: ClassVar[dict[str, Any]] = {
        "base": "saliency",
        "noise_level": 0.15,
        "n_samples": 16,
        "batch_size": None,
        "seed": 0,
    }

    def __init__(self, model: ModelGraph, **options: Any):
        base = options.get("base", self.own["base"])
        if base not in SMOOTHGRAD_BASES:
            raise RelevanceError(
                f"smoothgrad cannot smooth '{base}'", f"use base = {' | '.join(SMOOTHGRAD_BASES)}"
            )
        self.base = SMOOTHGRAD_BASES[base](
            model, **{k: v for k, v in options.items() if k not in self.own}
        )
        super().__init__(model, **options)

    def option_defaults(self) -> dict[str, Any]:
        return {**self.own, **self.base.options}

    def explainer(self, forward: nn.Module, layer: nn.Module | None) -> Attribution:
        return NoiseTunnel(self.base.explainer(forward, layer))

    def call_options(self, inputs: torch.Tensor, layer: nn.Module | None) -> dict[str, Any]:
        spread = float(inputs.detach().max() - inputs.detach().min())
        return {
            **self.base.call_options(inputs, layer),
            "nt_type": self.base.nt_type,
            "nt_samples": int(self.options["n_samples"]),
            "nt_samples_batch_size": self.options["batch_size"],
            "stdevs": float(self.options["noise_level"]) * spread,
        }
