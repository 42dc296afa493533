"""The adapter that runs a Captum attribution object as a `RelevanceMethod` on the model graph.

The gradient, CAM and perturbation methods are `RelevanceMethod`s built on one adapter,
`CaptumMethod`, which runs a Captum attribution object on the model graph (`gm(x) -> logits`).
Relevance at a layer uses Captum's layer variants on the graph cut at that layer: the model
becomes `nn.Sequential(trunk, head)` and the trunk (whose output is the layer's activation) is
the layer module Captum hooks.

Sampling methods (`smoothgrad`, `shapley_sampling`, `kernel_shap`, `lime`) explain each sample
alone under a torch generator seeded with option `seed` (default 0), so a sample's relevance
does not depend on the batch it comes in, and the global RNG state is left unchanged.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from captum.attr import Attribution
from torch import nn

from auditor.errors import RelevanceError
from auditor.model.graph import ModelGraph
from auditor.relevance.base import RelevanceMethod
from auditor.relevance.method_inputs import resolve_target, seeded


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
