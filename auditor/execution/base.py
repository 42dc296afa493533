"""What every executor does: map a pass over the batches of a sample set, where the model is.

A pass is a `PassTask`: a picklable callable that turns one batch of images into per-sample
outputs (logits, channel means, relevance scores, ...; arrays whose first axis is the batch),
given the `WorkerModel` the worker holds. The executor yields each batch's `BatchResult` with
the sample rows it covers, in any order; the caller reduces them (`Executor.run` places the rows
into arrays; sketches such as `auditor.execution.sketches.TopRows` merge them), so neither images nor
activations are ever collected in one place. Since every batch is computed the same way
wherever it runs, and rows are placed by index, results do not depend on the executor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import numpy as np
import torch

from auditor.config import Preprocess
from auditor.data.images import ImageSource
from auditor.data.samples import normalize
from auditor.execution.progress import sample_bar
from auditor.model.graph import SplitModel
from auditor.relevance import LRP, composite

Outputs = dict[str, np.ndarray]


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


class PassTask(Protocol):
    """One pass's work on one batch: per-sample outputs (first axis: the batch's samples)."""

    description: str

    def __call__(self, model: WorkerModel, images: np.ndarray, rows: np.ndarray) -> Outputs: ...


@dataclass(frozen=True)
class BatchResult:
    rows: np.ndarray
    outputs: Outputs


class Executor(ABC):
    """Runs passes over sample sets; a context manager that releases its workers on exit."""

    def map(
        self, task: PassTask, model: WorkerModel, images: ImageSource, batch_size: int
    ) -> Iterator[BatchResult]:
        """Every batch's result (in any order), with a progress bar over the samples."""
        with sample_bar(task.description, len(images)) as advance:
            for result in self._map(task, model, images, batch_size):
                yield result
                advance(len(result.rows))

    def run(
        self, task: PassTask, model: WorkerModel, images: ImageSource, batch_size: int
    ) -> Outputs:
        """Every output of the pass, one row per sample, in sample order."""
        return collect(self.map(task, model, images, batch_size), len(images))

    @abstractmethod
    def _map(
        self, task: PassTask, model: WorkerModel, images: ImageSource, batch_size: int
    ) -> Iterator[BatchResult]: ...

    def close(self) -> None:
        """Release the workers (nothing for the local executor)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def collect(results: Iterator[BatchResult], n: int) -> Outputs:
    """Place each batch's rows into arrays of `n` rows."""
    out: Outputs = {}
    for result in results:
        for name, values in result.outputs.items():
            if name not in out:
                out[name] = np.empty((n, *values.shape[1:]), dtype=values.dtype)
            out[name][result.rows] = values
    return out

