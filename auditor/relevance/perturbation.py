"""The perturbation and sampling family of relevance methods (Captum), on the input only.

* `occlusion` ([Zeiler2014]: `r_S = f(x) - f(x with S filled)`, averaged per pixel over
  the windows covering it): Captum `Occlusion` with square windows.
* `shapley_sampling`, `kernel_shap`, `lime` ([Strumbelj2014]; [Lundberg2017]; [Ribeiro2016]):
  Captum `ShapleyValueSampling`, `KernelShap`, `Lime` on square-patch features (a feature
  removed = filled with `fill`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum._utils.models.linear_model import SkLearnLasso, SkLearnLinearRegression
from captum.attr import Attribution, KernelShap, Lime, Occlusion, ShapleyValueSampling
from torch import nn

from auditor.relevance.base import RELEVANCE_METHODS
from auditor.relevance.captum_method import CaptumMethod
from auditor.relevance.method_inputs import patch_mask


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
