"""The default executor: the batches of a pass one after the other in this process, read from
disk as they are needed (memory bounded by one batch's images and activations)."""

from __future__ import annotations

from collections.abc import Iterator

from auditor.data.images import ImageSource
from auditor.execution.base import BatchResult, Executor, M, PassTask


class LocalExecutor(Executor):
    def _map(
        self, task: PassTask[M], model: M, images: ImageSource, batch_size: int
    ) -> Iterator[BatchResult]:
        for rows, batch in images.batches(batch_size):
            yield BatchResult(rows, task(model, batch, rows))
