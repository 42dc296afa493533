"""The one interface every relevance method implements, and the registry `explain` dispatches on.

Captum-style: one class per method, constructed on a model graph with the method's options,
with one entry point `attribute(inputs, target, layer)` returning relevance of the same shape
as `inputs` (layer=None) or as the output of module `layer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from auditor.model.graph import ModelGraph


class RelevanceMethod(ABC):
    """A relevance method bound to a model graph and its options."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: whether `attribute` accepts `layer` (relevance at a module output)
    supports_layer: ClassVar[bool] = True

    def __init__(self, model: ModelGraph, **options: Any):
        self.model = model
        self.options = options

    @abstractmethod
    def attribute(
        self, inputs: torch.Tensor, target: torch.Tensor | None = None, layer: str | None = None
    ) -> torch.Tensor:
        """Relevance for the logit of `target` (default: predicted class; a negative entry also
        means predicted class): N x C x H x W at the input, or the shape of `layer`'s output."""


METHODS: dict[str, type[RelevanceMethod]] = {}


def register(cls: type[RelevanceMethod]) -> type[RelevanceMethod]:
    """Class decorator: make a method available to `explain` under `cls.name`."""
    if cls.name in METHODS:
        raise ValueError(f"relevance method '{cls.name}' registered twice")
    METHODS[cls.name] = cls
    return cls
