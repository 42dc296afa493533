"""The conformance zoo: one module per CNN family that teams deploy, in plain torch with the
module structure and layer idioms of torchvision's definitions, at reduced widths (32x32
inputs, a fraction of a second per pass on 2 cores).

`FAMILIES` maps a name to its `Family`: the builder, the layer the auditor must pick by
default, and the relevance methods it refuses up front (with the operation the refusal names).
`tests/test_families.py` runs every family through every format and method; another family is
added with `register(Family(...))` in its own module, imported at the end of this file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class Family:
    """A model family of the zoo.

    `build(inplace)` returns the model (5 classes) with torchvision's in-place idioms
    (`inplace=True`) or their out-of-place twins (same parameter names, one state dict fits
    both). `layer` is the module the auditor audits by default. `refused` maps a relevance
    method (`lrp`, `srd`, a gradient method) to the operation its up-front refusal names;
    every other registered method applies. `onnx_xfail` maps a method to the reason its ONNX
    import is a known, strict failure."""

    name: str
    build: Callable[[bool], nn.Module]
    layer: str
    refused: Mapping[str, str] = field(default_factory=dict)
    onnx_xfail: Mapping[str, str] = field(default_factory=dict)

    def applies(self, method: str) -> bool:
        return method not in self.refused


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def randomise_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial normalisation statistics and affine parameters, and a layer scale of order
    one (ConvNeXt's 1e-6 initial scale would hide its blocks), as a trained model has."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
        scale = getattr(module, "layer_scale", None)
        if isinstance(scale, nn.Parameter):
            scale.data.uniform_(0.3, 1.0)
    return model


def pair(name: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(in-place build, out-of-place build) of family `name` with the same random weights and
    statistics, in eval mode."""
    family = FAMILIES[name]
    torch.manual_seed(seed)
    inplace = randomise_statistics(family.build(True))
    functional = family.build(False)
    functional.load_state_dict(inplace.state_dict())
    return inplace.eval(), functional.eval()


def bias_free(model: nn.Module) -> nn.Module:
    """No biases anywhere (convolutions, dense layers, normalisations; BatchNorm a pure scale):
    LRP-0 and epsilon then conserve the explained logit."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.zero_()
        normalised = isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.Conv2d, nn.Linear))
        if normalised and module.bias is not None:
            module.bias.data.zero_()
    return model


from tests.families import builtin  # noqa: F401 -- registers the built-in families
