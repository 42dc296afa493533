"""The model a worker holds for the audit's passes: the model cut at the audited layer, the
preprocessing, and the LRP composite of the audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from auditor.config import Preprocess
from auditor.data.samples import normalize
from auditor.model.graph import SplitModel
from auditor.relevance import LRP, composite


@dataclass
class WorkerModel:
    """What a worker holds: the model cut at the audited layer, the preprocessing, and the LRP
    composite of the audit (built where it is used: LRP rules are not shipped)."""

    split: SplitModel
    preprocess: Preprocess
    composite: str
    epsilon: float
    device: str = "cpu"
    _lrp: LRP | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_lrp": None}

    def to(self, device: str) -> WorkerModel:
        """This model on `device` (a new object; the graphs are moved)."""
        split = SplitModel(self.split.layer, self.split.trunk.to(device), self.split.head.to(device))
        return WorkerModel(split, self.preprocess, self.composite, self.epsilon, device)

    @property
    def head_lrp(self) -> LRP:
        """LRP through the head with the audit's composite."""
        if self._lrp is None:
            self._lrp = LRP(self.split.head, composite(self.composite, self.epsilon))
        return self._lrp

    def batch(self, images: np.ndarray) -> torch.Tensor:
        """A batch of [0, 1] images as a tensor on the model's device (not normalised)."""
        return torch.from_numpy(np.ascontiguousarray(images)).to(self.device)

    def trunk(self, images: torch.Tensor) -> torch.Tensor:
        """Layer activations of [0, 1] images (normalised here)."""
        with torch.no_grad():
            return self.split.trunk(normalize(images, self.preprocess))

    def head(self, activations: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.split.head(activations)
