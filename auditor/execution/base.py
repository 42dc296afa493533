"""What every executor does: map a pass over the batches of a sample set, where the model is.

A pass is a `PassTask`: a picklable callable that turns one batch of images into per-sample
outputs (logits, channel means, relevance scores, ...; arrays whose first axis is the batch),
given the model the worker holds (any `Movable`; the audit's passes take
`auditor.audit.worker.WorkerModel`). The executor yields each batch's `BatchResult` with the
sample rows it covers, in any order; the caller reduces them (`Executor.run` places the rows
into arrays; sketches such as `auditor.execution.sketches.TopRows` merge them), so neither
images nor activations are ever collected in one place. Since every batch is computed the same
way wherever it runs, and rows are placed by index, results do not depend on the executor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

import numpy as np

from auditor.data.images import ImageSource
from auditor.execution.progress import sample_bar

Outputs = dict[str, np.ndarray]


class Movable(Protocol):
    """What a worker holds for a pass (the model): any object that can move to a device."""

    def to(self, device: str) -> Self: ...


#: the model a pass runs on, on the worker
M = TypeVar("M", bound=Movable)


class PassTask(Protocol[M]):
    """One pass's work on one batch: per-sample outputs (first axis: the batch's samples)."""

    description: str

    def __call__(self, model: M, images: np.ndarray, rows: np.ndarray) -> Outputs: ...


@dataclass(frozen=True)
class BatchResult:
    rows: np.ndarray
    outputs: Outputs


class Executor(ABC):
    """Runs passes over sample sets; a context manager that releases its workers on exit."""

    def map(
        self, task: PassTask[M], model: M, images: ImageSource, batch_size: int
    ) -> Iterator[BatchResult]:
        """Every batch's result (in any order), with a progress bar over the samples."""
        with sample_bar(task.description, len(images)) as advance:
            for result in self._map(task, model, images, batch_size):
                yield result
                advance(len(result.rows))

    def run(
        self, task: PassTask[M], model: M, images: ImageSource, batch_size: int
    ) -> Outputs:
        """Every output of the pass, one row per sample, in sample order."""
        return collect(self.map(task, model, images, batch_size), len(images))

    @abstractmethod
    def _map(
        self, task: PassTask[M], model: M, images: ImageSource, batch_size: int
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

