"""The kNN graph of a set of embeddings: every row's `k` nearest other rows (Euclidean), the
workload of the spectral clustering (one index built, N queries of the indexed rows).

Two ways, chosen by size (`knn_graph`):

* `exact`: FAISS brute force (`IndexFlatL2`, queries in blocks through BLAS) [Johnson2021];
  cost `N^2 d`.
* `cells`: an inverted file [Jegou2011] searched one cell at a time. A seeded k-means
  (`nlist = round(2 sqrt(N))` centroids, trained on at most 64 rows per centroid) assigns each
  row to its nearest centroid; all rows of cell `c` are searched together, exactly, among the
  rows of the `nprobe` cells whose centroids are nearest to `c`'s centroid (`c` first), one
  matrix product per cell: cost about `N * nprobe * (N / nlist) * d` at BLAS speed, instead of
  `N` separate IVF queries. `nprobe` is tuned on the data: doubled from 4 until the recall@k of
  `TUNE_QUERIES` seeded rows against exact search reaches `TARGET_RECALL`; the measured recall
  is reported with the graph.

Measured (`make bench FULL=1`, `knn_graph`): 200 000 x 512 (a Gaussian mixture), k = 10, build
and all queries, against exact search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

EXACT_UP_TO = 20_000
"""Up to this many rows the graph is exact (brute force costs seconds there)."""
TARGET_RECALL = 0.97
"""Recall@k the tuning of `nprobe` aims at on its sample (above the 0.95 the graph must keep)."""
TUNE_QUERIES = 1_000
"""Rows whose exact neighbours measure the recall while `nprobe` is tuned."""
FIRST_NPROBE = 4
POINTS_PER_CENTROID = 64


@dataclass(frozen=True)
class KnnGraph:
    """Per row its `k` nearest other rows, nearest first (`indices`, -1 where fewer exist) and
    their Euclidean `distances`; how it was computed, and the recall measured while tuning
    (1.0 for exact)."""

    indices: np.ndarray
    distances: np.ndarray
    method: str
    nlist: int = 0
    nprobe: int = 0
    recall: float = 1.0


def _without_self(
    indices: np.ndarray, squared: np.ndarray, k: int, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Drop query `rows[i]`'s own index from its k + 1 nearest (or the last one, if absent)."""
    own = indices == rows[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), indices.shape[1] - 1)
    keep = np.ones_like(own)
    keep[np.arange(len(indices)), drop] = False
    shape = (len(indices), indices.shape[1] - 1)
    return indices[keep].reshape(shape)[:, :k], squared[keep].reshape(shape)[:, :k]


def exact_graph(x: np.ndarray, k: int) -> KnnGraph:
    """The exact kNN graph by FAISS brute force."""
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    squared, indices = index.search(x, min(k + 1, len(x)))
    indices, squared = _without_self(indices, squared, k, np.arange(len(x)))
    return KnnGraph(indices.astype(np.int64), np.sqrt(np.maximum(squared, 0)), "exact")


@dataclass(frozen=True)
class Cells:
    """The inverted file: each row's cell, the rows of each cell, and each cell's nearest
    cells (itself first)."""

    members: list[np.ndarray]
    assignment: np.ndarray
    nearest: np.ndarray


def cells(x: np.ndarray, nlist: int, max_probe: int, seed: int) -> Cells:
    kmeans = faiss.Kmeans(
        x.shape[1], nlist, niter=10, seed=seed, max_points_per_centroid=POINTS_PER_CENTROID,
        min_points_per_centroid=1,
    )
    kmeans.train(x)
    assignment = kmeans.index.search(x, 1)[1][:, 0]
    order = np.argsort(assignment, kind="stable")
    bounds = np.searchsorted(assignment[order], np.arange(nlist + 1))
    members = [order[bounds[c] : bounds[c + 1]] for c in range(nlist)]
    nearest = kmeans.index.search(kmeans.centroids, min(max_probe, nlist))[1]
    return Cells(members, assignment, nearest)


def _cell_search(
    x: np.ndarray, norms: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of `candidates` (rows of x) to each of `queries` (rows of x), itself
    excluded: squared distances `|q|^2 - 2 q.c + |c|^2` from one matrix product."""
    squared = norms[queries, None] - 2.0 * (x[queries] @ x[candidates].T) + norms[None, candidates]
    squared[queries[:, None] == candidates[None, :]] = np.inf
    m = min(k, len(candidates))
    if m < len(candidates):
        part = np.argpartition(squared, m - 1, axis=1)[:, :m]
    else:
        part = np.broadcast_to(np.arange(m), (len(queries), m))
    best = np.take_along_axis(squared, part, axis=1)
    order = np.argsort(best, axis=1, kind="stable")
    chosen, dist = candidates[np.take_along_axis(part, order, axis=1)], np.take_along_axis(best, order, axis=1)
    indices = np.full((len(queries), k), -1, dtype=np.int64)
    distances = np.full((len(queries), k), np.inf, dtype=np.float32)
    indices[:, :m], distances[:, :m] = np.where(np.isfinite(dist), chosen, -1), dist
    return indices, distances


def _candidates(grid: Cells, cell: int, nprobe: int) -> np.ndarray:
    return np.concatenate([grid.members[c] for c in grid.nearest[cell, :nprobe]])


def cell_graph(x: np.ndarray, k: int, grid: Cells, nprobe: int, rows: np.ndarray | None = None) -> KnnGraph:
    """The kNN graph of the rows `rows` (default: all), each searched among the rows of the
    `nprobe` cells nearest to its own cell."""
    norms = np.einsum("ij,ij->i", x, x)
    wanted = None if rows is None else np.isin(np.arange(len(x)), rows)
    n = len(x) if rows is None else len(rows)
    position = np.arange(len(x)) if rows is None else np.full(len(x), -1)
    if rows is not None:
        position[rows] = np.arange(len(rows))
    indices = np.full((n, k), -1, dtype=np.int64)
    distances = np.full((n, k), np.inf, dtype=np.float32)
    for cell, queries in enumerate(grid.members):
        if wanted is not None:
            queries = queries[wanted[queries]]
        if len(queries) == 0:
            continue
        found, dist = _cell_search(x, norms, queries, _candidates(grid, cell, nprobe), k)
        indices[position[queries]], distances[position[queries]] = found, dist
    return KnnGraph(indices, np.sqrt(np.maximum(distances, 0)), "cells", len(grid.members), nprobe)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true neighbours that were found."""
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth, strict=True)]))


def knn_graph(x: np.ndarray, k: int, *, seed: int = 0) -> KnnGraph:
    """Every row's `k` nearest other rows of `x` (N x d): exact up to `EXACT_UP_TO` rows,
    else the cell-batched inverted file with `nprobe` tuned to `TARGET_RECALL` (see the module
    docstring). Seeded: the same rows and seed give the same graph."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if n <= EXACT_UP_TO:
        return exact_graph(x, k)
    nlist = max(1, round(2 * math.sqrt(n)))
    grid = cells(x, nlist, max_probe=nlist, seed=seed)
    sample = np.sort(np.random.default_rng(seed).choice(n, size=min(TUNE_QUERIES, n), replace=False))
    exact = faiss.IndexFlatL2(x.shape[1])
    exact.add(x)
    squared, truth = exact.search(x[sample], k + 1)
    truth = _without_self(truth, squared, k, sample)[0]
    nprobe = min(FIRST_NPROBE, nlist)
    while True:
        measured = recall(cell_graph(x, k, grid, nprobe, rows=sample).indices, truth)
        if measured >= TARGET_RECALL or nprobe >= nlist:
            break
        nprobe = min(2 * nprobe, nlist)
    graph = cell_graph(x, k, grid, nprobe)
    return KnnGraph(graph.indices, graph.distances, "cells", nlist, nprobe, measured)
