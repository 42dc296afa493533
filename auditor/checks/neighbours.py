"""FAISS nearest-neighbour indexes over embeddings [Johnson2021]: the nearest examples of
a sample in the metric of a feature layer, the `x_i` sorted by `||h(x_i) - h(x)||` [Chen2019].

Kinds, all Euclidean (FAISS returns squared distances; `search` returns their square roots):

* `flat`: exact (`IndexFlatL2`).
* `hnsw`: a navigable small-world graph (`IndexHNSWFlat`, M = 32 links, efSearch = 128);
  built on one thread, because a parallel build inserts in a thread-timing dependent order.
* `ivf`: inverted lists (`IndexIVFFlat`) over nlist = round(sqrt(N)) k-means cells (seeded
  `cp.seed`), searching nprobe = ceil(nlist / 2) cells per query.

`auto` takes `flat` up to a size threshold and `hnsw` above it: on unclustered 32-d Gaussian
data (the worst case) HNSW reaches recall@10 0.97 at efSearch 64 and 0.995 at 128 for 20 000
vectors without training, while IVF needs half of its cells probed for 0.9 (0.53 at nlist / 8).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

IndexKind = Literal["flat", "ivf", "hnsw"]
IndexSetting = Literal["auto", "flat", "ivf", "hnsw"]
HNSW_LINKS = 32
HNSW_EF_SEARCH = 128


@dataclass(frozen=True)
class IndexHandle:
    """A FAISS index over the rows `0..size-1` of the vectors it was built from."""

    index: faiss.Index
    kind: IndexKind

    @property
    def size(self) -> int:
        return int(self.index.ntotal)


@dataclass(frozen=True)
class Neighbours:
    """Per query, its neighbours nearest first: Euclidean `distances` and row `indices`."""

    distances: np.ndarray
    indices: np.ndarray


def choose_kind(n: int, setting: IndexSetting, threshold: int) -> IndexKind:
    """The configured kind, or for `auto`: exact up to `threshold` vectors, HNSW above."""
    if setting != "auto":
        return setting
    return "flat" if n <= threshold else "hnsw"


@contextlib.contextmanager
def one_faiss_thread() -> Iterator[None]:
    """FAISS on one OpenMP thread inside the block (an HNSW graph built on several threads
    depends on their timing); the previous setting is restored after."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


SHARD = 65_536
IVF_TRAIN_MAX = 100_000


def _add_shards(index: faiss.Index, vectors: np.ndarray) -> None:
    """Add the rows shard by shard: only one shard at a time is converted to float32 (the
    vectors may be float16); for a flat or IVF index the result is the same as one `add` of
    all rows. (Not for HNSW: its graph built from several `add` calls is worse, recall@10
    0.87 instead of 0.99 at 80 000 x 128 in 4 shards, faiss 1.15.)"""
    for start in range(0, len(vectors), SHARD):
        index.add(np.ascontiguousarray(vectors[start : start + SHARD], dtype=np.float32))


def build_index(vectors: np.ndarray, kind: IndexKind, *, seed: int = 0) -> IndexHandle:
    """Index the rows of `vectors` (N x d, float32 or float16), added in shards (flat, IVF);
    the same vectors and seed give the same index. IVF is trained on a seeded sample of at
    most `IVF_TRAIN_MAX` rows."""
    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatL2(dim)
        _add_shards(index, vectors)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_LINKS)
        index.hnsw.efSearch = HNSW_EF_SEARCH
        with one_faiss_thread():
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    else:
        nlist = max(1, min(round(math.sqrt(n)), n))
        index = faiss.index_factory(dim, f"IVF{nlist},Flat")
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = seed
        ivf.cp.min_points_per_centroid = 1  # small sets: no "too few points" warning
        ivf.nprobe = math.ceil(nlist / 2)
        sample = np.sort(np.random.default_rng(seed).permutation(n)[:IVF_TRAIN_MAX])
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        _add_shards(index, vectors)
    return IndexHandle(index, kind)


def search(handle: IndexHandle, queries: np.ndarray, k: int) -> Neighbours:
    """The `k` nearest indexed rows of each query (at most as many as are indexed)."""
    k = min(k, handle.size)
    squared, indices = handle.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return Neighbours(np.sqrt(np.maximum(squared, 0.0)), indices.astype(np.int64))


def nearest_other(handle: IndexHandle, vectors: np.ndarray) -> Neighbours:
    """Leave-one-out: for each indexed row `i` (`vectors[i]` is row i of the index), its nearest
    other row. An exact duplicate of `i` counts as another row at distance 0."""
    found = search(handle, vectors, 2)
    first_is_self = found.indices[:, 0] == np.arange(len(vectors))
    column = np.where(first_is_self, 1, 0)[:, None]
    return Neighbours(
        np.take_along_axis(found.distances, column, axis=1),
        np.take_along_axis(found.indices, column, axis=1),
    )
