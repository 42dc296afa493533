"""The CAM family of relevance methods: Grad-CAM (Captum) and Layer-CAM (from Captum parts).

Formulas (f = target logit, u = activation of a layer):

* `grad_cam` ([Selvaraju2017]: `alpha_c = 1/HW sum_hw df/du[c,h,w]`,
  `R[h,w] = ReLU(sum_c alpha_c u[c,h,w])`): Captum `LayerGradCam`.
* `layer_cam` (Jiang et al. 2021: `R[h,w] = ReLU(sum_c ReLU(df/du[c,h,w]) u[c,h,w])`): not in
  Captum; built from Captum's `LayerGradientXActivation` (gradient) and `LayerActivation`.

For the CAM methods `layer` is where the relevance is returned: with a layer, the per-channel
terms at that layer (N x C x h x w, `alpha_c u[c,h,w]` for Grad-CAM, `ReLU(df/du) u` for
Layer-CAM; summing them over channels and applying ReLU gives the CAM map there); with
`layer=None`, the CAM map computed at option `cam_layer` (default: the model's last
convolutional block), upsampled bilinearly to the input size (`LayerAttribution.interpolate`)
and split evenly over the input channels (so the channel sum of the result is the map).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum.attr import (
    Attribution,
    LayerActivation,
    LayerAttribution,
    LayerGradCam,
    LayerGradientXActivation,
)
from captum.attr._utils.attribution import GradientAttribution
from torch import nn

from auditor.relevance.base import RELEVANCE_METHODS
from auditor.relevance.captum_method import CaptumMethod


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


class _Cam(CaptumMethod):
    """A CAM method (see the module docstring for what `layer` means here)."""

    supports_attention = False

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
