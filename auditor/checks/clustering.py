"""Spectral clusters of embeddings (SpRAy; Ng, Jordan, Weiss 2001): the symmetric graph `A` of
each sample's `graph_neighbours` nearest samples (`auditor.checks.knn_graph`), its normalised Laplacian
`L = I - D^-1/2 A D^-1/2` with eigenvalues `l_1 <= l_2 <= ...`; `k = argmax_{2<=k<=k_max}
(l_{k+1} - l_k)` (eigengap) unless `k` is set; the rows of the first `k` eigenvectors, scaled to
unit length, clustered by FAISS k-means (seeded, fixed iterations, `KMEANS_RESTARTS` starts).
Clusters are numbered by size, largest first. Above `cluster_samples` samples a seeded
subsample is clustered and each other sample joins the cluster of its nearest clustered sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import laplacian
from scipy.sparse.linalg import eigsh

from auditor.checks.knn_graph import knn_graph
from auditor.checks.neighbours import IndexHandle, IndexSetting, build_index, choose_kind, search

MIN_SAMPLES = 20
"""Fewer samples than this are not clustered."""
#: seeded k-means restarts on the spectral embedding, the best objective kept: one start can
#: put two centroids on one tight cluster and merge two others (seen with faiss 1.15)
KMEANS_RESTARTS = 10
LAPLACIAN_SHIFT = -1e-3
"""Shift-invert point below the Laplacian's spectrum (>= 0): `L - shift I` factorises."""


@dataclass(frozen=True)
class ClusteringParams:
    """How to cluster: the samples clustered at most, the neighbours of the graph, the number
    of clusters (`k`, or the eigengap up to `k_max`), the k-means iterations, and the FAISS
    index kind (`index`, `auto` switching to HNSW above `index_threshold` vectors)."""

    cluster_samples: int
    graph_neighbours: int
    k: int | None
    k_max: int
    kmeans_iterations: int
    index: IndexSetting
    index_threshold: int


@dataclass(frozen=True)
class Clustering:
    """Cluster of each sample (0 = largest), the number of clusters and the smallest
    eigenvalues of the graph Laplacian (`k_max + 1` of them)."""

    assignment: np.ndarray
    k: int
    eigenvalues: list[float]


def _subsample(n: int, size: int, seed: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _graph(x: np.ndarray, neighbours: int, seed: int) -> sparse.csr_matrix:
    """Symmetric 0/1 adjacency of each row's `neighbours` nearest other rows (`knn_graph`)."""
    found = knn_graph(x, neighbours, seed=seed)
    rows = np.repeat(np.arange(len(x)), found.indices.shape[1])
    cols = found.indices.ravel()
    keep = (cols >= 0) & (cols != rows)
    adjacency = sparse.csr_matrix(
        (np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(len(x), len(x))
    )
    return ((adjacency + adjacency.T) > 0).astype(np.float64)


def eigengap_k(eigenvalues: np.ndarray, k_max: int) -> int:
    """`argmax_{2<=k<=k_max} (l_{k+1} - l_k)` over ascending eigenvalues `l_1, l_2, ...`."""
    gaps = np.diff(eigenvalues[: k_max + 1])  # gaps[j] = l_{j+2} - l_{j+1}
    return int(np.argmax(gaps[1:k_max])) + 2


def spectral_clusters(
    x: np.ndarray, settings: ClusteringParams, seed: int, index: IndexHandle
) -> Clustering:
    """Spectral clusters of the rows of `x` (N >= MIN_SAMPLES); `index` indexes all of `x`
    (a subsample gets its own)."""
    rows = _subsample(len(x), settings.cluster_samples, seed)
    clustered = x[rows]
    if len(rows) < len(x):
        kind = choose_kind(len(rows), settings.index, settings.index_threshold)
        index = build_index(clustered, kind, seed=seed)
    neighbours = min(settings.graph_neighbours, len(rows) - 1)
    n_eigen = min(settings.k_max + 1, len(rows) - 1)
    lap = laplacian(_graph(clustered, neighbours, seed), normed=True)
    v0 = np.random.default_rng(seed).random(len(rows))
    values, vectors = eigsh(lap, k=n_eigen, sigma=LAPLACIAN_SHIFT, which="LM", v0=v0)
    order = np.argsort(values)
    values, vectors = values[order], vectors[:, order]
    k = settings.k or eigengap_k(values, n_eigen - 1)
    k = min(k, n_eigen)
    spectral = vectors[:, :k]
    spectral = np.ascontiguousarray(
        spectral / np.maximum(np.linalg.norm(spectral, axis=1, keepdims=True), 1e-12),
        dtype=np.float32,
    )
    kmeans = faiss.Kmeans(
        k, k, niter=settings.kmeans_iterations, seed=seed, min_points_per_centroid=1,
        nredo=KMEANS_RESTARTS,
    )
    kmeans.train(spectral)
    labels = kmeans.index.search(spectral, 1)[1][:, 0]
    assignment = np.empty(len(x), dtype=np.int64)
    assignment[rows] = labels
    others = np.setdiff1d(np.arange(len(x)), rows)
    if len(others):  # `index` holds the clustered rows only
        assignment[others] = labels[search(index, x[others], 1).indices[:, 0]]
    return Clustering(_by_size(assignment), k, [float(v) for v in values])


def _by_size(assignment: np.ndarray) -> np.ndarray:
    """Renumber clusters by size, largest first (ties: the one holding the lower row first)."""
    ids, first, sizes = np.unique(assignment, return_index=True, return_counts=True)
    order = np.lexsort((first, -sizes))
    renumber = np.empty(ids.max() + 1, dtype=np.int64)
    renumber[ids[order]] = np.arange(len(ids))
    return renumber[assignment]
