"""Mergeable summaries of per-sample values, so that a pass keeps a bounded amount of them
whatever the number of samples (and partial summaries from different workers merge to the
summary of the whole set)."""

from __future__ import annotations

import numpy as np


class TopRows:
    """Per column (e.g. channel) the `m` rows with the largest values, in descending order of
    value, ties broken by the smaller row: the same as sorting all N rows, in O(m x columns)
    memory. `update` with a batch and `merge` with another sketch in any order give the same
    result."""

    def __init__(self, m: int, columns: int):
        self.m = m
        self.values = np.empty((0, columns), dtype=np.float64)
        self.rows = np.empty((0, columns), dtype=np.int64)

    def update(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Add a batch: `values` (len(rows) x columns) of samples `rows`."""
        rows = np.broadcast_to(np.asarray(rows, dtype=np.int64)[:, None], values.shape)
        self._keep(np.vstack([self.values, values]), np.vstack([self.rows, rows]))

    def merge(self, other: TopRows) -> None:
        self._keep(np.vstack([self.values, other.values]), np.vstack([self.rows, other.rows]))

    def _keep(self, values: np.ndarray, rows: np.ndarray) -> None:
        order = np.lexsort((rows, -values), axis=0)[: self.m]
        self.values = np.take_along_axis(values, order, axis=0)
        self.rows = np.take_along_axis(rows, order, axis=0)

    def top(self, column: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, values) of one column, best first."""
        return self.rows[:, column], self.values[:, column]
