"""The one interface every relevance method implements, and the `RELEVANCE_METHODS` registry
`explain` dispatches on (built-ins by decorator, plug-ins by entry point).

Captum-style: one class per method, constructed on a model graph with the method's options,
with one entry point `attribute(inputs, target, layer)` returning relevance of the same shape
as `inputs` (layer=None) or as the output of module `layer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from auditor.model.graph import ModelGraph
from auditor.registry import Registry


class RelevanceMethod(ABC):
    """A relevance method bound to a model graph and its options."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: whether `attribute` accepts `layer` (relevance at a module output)
    supports_layer: ClassVar[bool] = True
    #: whether it explains a transformer (softmax attention); methods built for
    #: convolutional ReLU encoders (SRD, guided backpropagation, CAMs) refuse one up front
    supports_attention: ClassVar[bool] = True

    def __init__(self, model: ModelGraph, **options: Any):
        self.model = model
        self.options = options

    @abstractmethod
    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor | None = None, layer: str | None = None
    ) -> torch.Tensor:
        """Relevance for the logit of `target` (default: predicted class; a negative entry also
        means predicted class): N x C x H x W at the input, or the shape of `layer`'s output."""


def check_method_class(name: str, cls: type[RelevanceMethod]) -> None:
    """The `RELEVANCE_METHODS` validity check: a `RelevanceMethod` subclass named `name`, with
    a description."""
    if not (isinstance(cls, type) and issubclass(cls, RelevanceMethod)):
        raise TypeError(f"{cls!r} is not a RelevanceMethod subclass")
    for attribute in ("name", "description"):
        if not isinstance(getattr(cls, attribute, None), str):
            raise TypeError(
                f"relevance method class {cls.__qualname__} needs a class attribute '{attribute}'"
            )
    if cls.name != name:
        raise TypeError(
            f"relevance method class {cls.__qualname__} is named '{cls.name}', not '{name}'"
        )


RELEVANCE_METHODS: Registry[type[RelevanceMethod]] = Registry(
    "relevance method", "relevance_auditor.relevance_methods", check_method_class
)
