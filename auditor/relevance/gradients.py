"""The gradient and perturbation family of relevance methods, computed by Captum.

Every method is a `RelevanceMethod` registered under its name and built on one adapter,
`CaptumMethod`, which runs a Captum attribution object on the model graph (`gm(x) -> logits`).
Relevance at a layer uses Captum's layer variants on the graph cut at that layer: the model
becomes `nn.Sequential(trunk, head)` and the trunk (whose output is the layer's activation) is
the layer module Captum hooks. Formulas (f = target logit, u = activation of a layer):

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
* `grad_cam` ([Selvaraju2017]: `alpha_c = 1/HW sum_hw df/du[c,h,w]`,
  `R[h,w] = ReLU(sum_c alpha_c u[c,h,w])`): Captum `LayerGradCam`.
* `layer_cam` (Jiang et al. 2021: `R[h,w] = ReLU(sum_c ReLU(df/du[c,h,w]) u[c,h,w])`): not in
  Captum; built from Captum's `LayerGradientXActivation` (gradient) and `LayerActivation`.
* `occlusion` ([Zeiler2014]: `r_S = f(x) - f(x with S filled)`, averaged per pixel over
  the windows covering it): Captum `Occlusion` with square windows.
* `shapley_sampling`, `kernel_shap`, `lime` ([Strumbelj2014]; [Lundberg2017]; [Ribeiro2016]):
  Captum `ShapleyValueSampling`, `KernelShap`, `Lime` on square-patch features (a feature
  removed = filled with `fill`).

For the CAM methods `layer` is where the relevance is returned: with a layer, the per-channel
terms at that layer (N x C x h x w, `alpha_c u[c,h,w]` for Grad-CAM, `ReLU(df/du) u` for
Layer-CAM; summing them over channels and applying ReLU gives the CAM map there); with
`layer=None`, the CAM map computed at option `cam_layer` (default: the model's last
convolutional block), upsampled bilinearly to the input size (`LayerAttribution.interpolate`)
and split evenly over the input channels (so the channel sum of the result is the map).
Perturbation methods explain the input only.

Sampling methods (`smoothgrad`, `shapley_sampling`, `kernel_shap`, `lime`) explain each sample
alone under a torch generator seeded with option `seed` (default 0), so a sample's relevance
does not depend on the batch it comes in, and the global RNG state is left unchanged.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from captum._utils.models.linear_model import SkLearnLasso, SkLearnLinearRegression
from captum.attr import (
    Attribution,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerActivation,
    LayerAttribution,
    LayerGradCam,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
    ShapleyValueSampling,
)
from captum.attr._utils.attribution import GradientAttribution
from torch import fx, nn

from auditor.errors import RelevanceError
from auditor.model.graph import ModelGraph
from auditor.model.ops import RELU_OPS
from auditor.relevance.base import RELEVANCE_METHODS, RelevanceMethod


def resolve_target(logits: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
    """Class index per sample: `target`, with the predicted class where it is None or negative."""
    predicted = logits.detach().argmax(dim=1)
    if target is None:
        return predicted
    target = torch.as_tensor(target, device=predicted.device).reshape(-1).expand_as(predicted)
    return torch.where(target >= 0, target, predicted)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the CPU torch generator seeded, restoring the global RNG state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def patch_mask(height: int, width: int, patch: int) -> torch.Tensor:
    """1 x 1 x H x W feature ids of square `patch` x `patch` tiles, row-major (border tiles
    are cut to the image)."""
    rows = torch.arange(height) // patch
    cols = torch.arange(width) // patch
    per_row = -(-width // patch)
    return (rows[:, None] * per_row + cols[None, :]).reshape(1, 1, height, width)


def baseline(inputs: torch.Tensor, kind: str | float | torch.Tensor) -> torch.Tensor:
    """The reference input x0: "zeros", "mean" (each sample's per-channel spatial mean, so it
    does not depend on the rest of the batch), a constant, or a tensor broadcast to `inputs`
    (one C x H x W image for sampling methods, which explain one sample at a time)."""
    inputs = inputs.detach()
    if isinstance(kind, torch.Tensor):
        return kind.to(inputs).expand_as(inputs)
    if kind == "zeros":
        return torch.zeros_like(inputs)
    if kind == "mean":
        return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs)
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return torch.full_like(inputs, float(kind))
    raise RelevanceError(
        f"unknown baseline {kind!r}", 'use "zeros", "mean", a number or a tensor like the inputs'
    )


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


class LayerCam(LayerAttribution, GradientAttribution):
    """Layer-CAM (Jiang et al. 2021) in Captum's interface, mirroring `LayerGradCam`:
    terms `ReLU(df/du[c,h,w]) * u[c,h,w]`, summed over channels unless told otherwise."""

    def __init__(self, forward_func: nn.Module, layer: nn.Module) -> None:
        LayerAttribution.__init__(self, forward_func, layer)
        GradientAttribution.__init__(self, forward_func)

    def attribute(
        self,
        inputs: torch.Tensor,
        target: torch.Tensor | None = None,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
    ) -> torch.Tensor:
        gradient = LayerGradientXActivation(
            self.forward_func, self.layer, multiply_by_inputs=False
        ).attribute(inputs, target)
        activation = LayerActivation(self.forward_func, self.layer).attribute(inputs)
        terms = gradient.clamp(min=0) * activation
        if attr_dim_summation:
            terms = terms.sum(dim=1, keepdim=True)
        return terms.clamp(min=0) if relu_attributions else terms


class CaptumMethod(RelevanceMethod):
    """Adapter: one Captum attribution object per call, run on the graph (layer=None) or on
    `nn.Sequential(trunk, head)` with the trunk as Captum's layer.

    A subclass names its options with their defaults (`defaults`; an unknown option is an
    error), builds the Captum object (`explainer`), gives its keyword arguments
    (`call_options`) and may post-process the result (`finish`).
    """

    defaults: ClassVar[dict[str, Any]] = {}
    #: explain each sample alone under a generator seeded with option `seed`
    stochastic: ClassVar[bool] = False

    def __init__(self, model: ModelGraph, **options: Any):
        defaults = self.option_defaults()
        unknown = set(options) - set(defaults)
        if unknown:
            known = ", ".join(sorted(defaults)) or "none"
            raise RelevanceError(
                f"relevance method '{self.name}' has no option {', '.join(sorted(unknown))}",
                f"its options are: {known}",
            )
        super().__init__(model, **{**defaults, **options})
        self._stacked: dict[str, nn.Sequential] = {}

    def option_defaults(self) -> dict[str, Any]:
        """Every option the method accepts, with its default."""
        return self.defaults

    def graph(self) -> ModelGraph:
        """The graph the method differentiates (guided backprop rewrites it)."""
        return self.model

    @abstractmethod
    def explainer(self, forward: nn.Module, layer: nn.Module | None) -> Attribution:
        """The Captum object on `forward`, for `layer` (a child of `forward`) or the input."""

    def call_options(self, inputs: torch.Tensor, layer: nn.Module | None) -> dict[str, Any]:
        """Keyword arguments of the Captum `attribute` call besides inputs and target."""
        return {}

    def finish(
        self, attributions: torch.Tensor, inputs: torch.Tensor, layer: nn.Module | None
    ) -> torch.Tensor:
        """The method's relevance from Captum's attributions."""
        return attributions

    def stacked(self, layer: str) -> nn.Sequential:
        """`nn.Sequential(trunk, head)` cut at `layer`; its first child outputs the activation."""
        if layer not in self._stacked:
            split = self.graph().split(layer)
            self._stacked[layer] = nn.Sequential(split.trunk, split.head)
        return self._stacked[layer]

    def forward_and_layer(self, layer: str | None) -> tuple[nn.Module, nn.Module | None]:
        """(the module Captum runs, the layer module it hooks or None for the input)."""
        if layer is None:
            return self.graph().gm, None
        stacked = self.stacked(layer)
        return stacked, stacked[0]

    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor | None = None, layer: str | None = None
    ) -> torch.Tensor:
        if inputs.dim() != 4 or not inputs.is_floating_point():
            raise RelevanceError(
                f"relevance method '{self.name}' needs N x C x H x W float inputs, got "
                f"{inputs.dtype} of shape {tuple(inputs.shape)}",
                "pass a batch of preprocessed images",
            )
        if layer is not None and not self.supports_layer:
            raise RelevanceError(
                f"relevance method '{self.name}' explains the input only, not layer '{layer}'",
                "call it with layer=None, or use a gradient method for layer relevance",
            )
        forward, layer_module = self.forward_and_layer(layer)
        inputs = inputs.detach().requires_grad_(True)
        with torch.no_grad():
            target = resolve_target(forward(inputs), target)
        explainer = self.explainer(forward, layer_module)
        if not self.stochastic:
            return self._run(explainer, inputs, target, layer_module)
        parts = []
        for i in range(len(inputs)):
            with seeded(self.options["seed"]):
                parts.append(
                    self._run(explainer, inputs[i : i + 1], target[i : i + 1], layer_module)
                )
        return torch.cat(parts)

    def _run(
        self,
        explainer: Attribution,
        inputs: torch.Tensor,
        target: torch.Tensor,
        layer: nn.Module | None,
    ) -> torch.Tensor:
        attributions = explainer.attribute(
            inputs, target=target, **self.call_options(inputs, layer)
        )
        return self.finish(attributions, inputs, layer).detach()


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


class _Cam(CaptumMethod):
    """A CAM method (see the module docstring for what `layer` means here)."""

    defaults: ClassVar[dict[str, Any]] = {"cam_layer": None}
    captum_class: ClassVar[type[LayerGradCam | LayerCam]]

    def forward_and_layer(self, layer: str | None) -> tuple[nn.Module, nn.Module | None]:
        stacked = self.stacked(layer or self.options["cam_layer"] or self.model.default_layer())
        return stacked, (stacked[0] if layer is not None else None)

    def explainer(self, forward: nn.Module, layer: nn.Module | None) -> Attribution:
        return self.captum_class(forward, forward[0])

    def call_options(self, inputs: torch.Tensor, layer: nn.Module | None) -> dict[str, Any]:
        at_input = layer is None
        return {"relu_attributions": at_input, "attr_dim_summation": at_input}

    def finish(
        self, attributions: torch.Tensor, inputs: torch.Tensor, layer: nn.Module | None
    ) -> torch.Tensor:
        if layer is not None:  # per-channel terms at the asked layer
            return attributions
        upsampled = LayerAttribution.interpolate(attributions, tuple(inputs.shape[2:]), "bilinear")
        return (upsampled / inputs.shape[1]).expand_as(inputs).contiguous()


@RELEVANCE_METHODS.register("grad_cam")
class GradCam(_Cam):
    """Grad-CAM [Selvaraju2017] through Captum `LayerGradCam`."""

    name = "grad_cam"
    description = "Grad-CAM: activations weighted by spatially averaged gradients"
    captum_class = LayerGradCam


@RELEVANCE_METHODS.register("layer_cam")
class LayerCamMethod(_Cam):
    """Layer-CAM (Jiang et al. 2021): activations weighted by their positive gradients."""

    name = "layer_cam"
    description = "Layer-CAM: activations weighted by their positive gradients, per position"
    captum_class = LayerCam


@RELEVANCE_METHODS.register("occlusion")
class OcclusionMethod(CaptumMethod):
    """Occlusion [Zeiler2014] with `patch` x `patch` windows moved by `stride`."""

    name = "occlusion"
    description = "drop of the target logit when a square patch is filled with a constant"
    supports_layer = False
    defaults: ClassVar[dict[str, Any]] = {"patch": 4, "stride": None, "fill": 0.0, "batch_size": 16}

    def explainer(self, forward: nn.Module, layer: nn.Module | None) -> Attribution:
        return Occlusion(forward)

    def call_options(self, inputs: torch.Tensor, layer: nn.Module | None) -> dict[str, Any]:
        patch = int(self.options["patch"])
        stride = int(self.options["stride"] or patch)
        channels = inputs.shape[1]
        return {
            "sliding_window_shapes": (channels, patch, patch),
            "strides": (channels, stride, stride),
            "baselines": float(self.options["fill"]),
            "perturbations_per_eval": int(self.options["batch_size"]),
        }


#: options of the patch-feature sampling methods (each adds its `n_samples` default)
PATCH_OPTIONS: dict[str, Any] = {"patch": 4, "fill": 0.0, "batch_size": 16, "seed": 0}


class _PatchFeatures(CaptumMethod):
    """A sampling method on square-patch features; a removed patch is filled with `fill`."""

    supports_layer = False
    stochastic = True
    captum_class: ClassVar[type[Attribution]]

    def explainer(self, forward: nn.Module, layer: nn.Module | None) -> Attribution:
        return self.captum_class(forward)

    def call_options(self, inputs: torch.Tensor, layer: nn.Module | None) -> dict[str, Any]:
        return {
            "baselines": float(self.options["fill"]),
            "feature_mask": patch_mask(*inputs.shape[2:], int(self.options["patch"])).to(
                inputs.device
            ),
            "n_samples": int(self.options["n_samples"]),
            "perturbations_per_eval": int(self.options["batch_size"]),
        }


@RELEVANCE_METHODS.register("shapley_sampling")
class ShapleySampling(_PatchFeatures):
    """Shapley values of patches estimated from `n_samples` random feature orders."""

    name = "shapley_sampling"
    description = "Shapley values of square patches, sampled over random feature orders"
    defaults: ClassVar[dict[str, Any]] = {**PATCH_OPTIONS, "n_samples": 8}
    captum_class = ShapleyValueSampling


@RELEVANCE_METHODS.register("kernel_shap")
class KernelShapMethod(_PatchFeatures):
    """Kernel SHAP: a Shapley-kernel weighted linear fit on `n_samples` patch coalitions."""

    name = "kernel_shap"
    description = "Kernel SHAP on square patches"
    defaults: ClassVar[dict[str, Any]] = {**PATCH_OPTIONS, "n_samples": 64}
    captum_class = KernelShap


@RELEVANCE_METHODS.register("lime")
class LimeMethod(_PatchFeatures):
    """LIME [Ribeiro2016, Algorithm 1]: a linear surrogate fit on `n_samples` random patch subsets,
    weighted by their similarity to the input (Captum's exponential cosine kernel). With
    `alpha > 0` the surrogate is a Lasso (the paper's sparse K-Lasso; alpha is on the scale of
    the logits), with `alpha = 0` (default) ordinary weighted least squares."""

    name = "lime"
    description = "LIME: local linear surrogate on square patches"
    defaults: ClassVar[dict[str, Any]] = {**PATCH_OPTIONS, "n_samples": 64, "alpha": 0.0}

    def explainer(self, forward: nn.Module, layer: nn.Module | None) -> Attribution:
        alpha = float(self.options["alpha"])
        surrogate = SkLearnLasso(alpha=alpha) if alpha > 0 else SkLearnLinearRegression()
        return Lime(forward, interpretable_model=surrogate)
