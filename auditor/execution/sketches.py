"""Summaries of per-sample values that a pass updates batch by batch, in whatever order the
batches arrive from the workers, keeping a bounded amount of them whatever the number of
samples."""

from __future__ import annotations

import numpy as np


class TopRows:
    """Per column (e.g. channel) the `m` rows with the largest values, in descending order of
    value, ties broken by the smaller row: the same as sorting all N rows, in O(m x columns)
    memory. Batches added by `update` in any order give the same result."""

    def __init__(self, m: int, columns: int):
        self.m = m
        self.values = np.empty((0, columns), dtype=np.float64)
        self.rows = np.empty((0, columns), dtype=np.int64)

    def update(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Add a batch: `values` (len(rows) x columns) of samples `rows`."""
        rows = np.broadcast_to(np.asarray(rows, dtype=np.int64)[:, None], values.shape)
        values, rows = np.vstack([self.values, values]), np.vstack([self.rows, rows])
        order = np.lexsort((rows, -values), axis=0)[: self.m]
        self.values = np.take_along_axis(values, order, axis=0)
        self.rows = np.take_along_axis(rows, order, axis=0)

    def top(self, column: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, values) of one column, best first."""
        return self.rows[:, column], self.values[:, column]
