"""FAISS kNN at scale (issue "Scale"): the index the auditor picks against exact brute force.

Data: 200 000 x 512 float32 vectors and 1 000 queries drawn alike from a seeded Gaussian
mixture (40 components in a random 64-d subspace of R^512, plus isotropic noise), so that
neighbours are structured, as embeddings are, and recall is meaningful. k = 10.

* `picked`: `auditor.checks.neighbours.choose_kind(n, "auto", 50_000)` (HNSW at this size: M = 32,
  efSearch = 128), built and searched with `build_index` / `search`, as the audit does;
* `exact`: `IndexFlatL2` through the same functions.

Build: one build each (CPU and wall seconds). Query: median of interleaved searches of all
queries. Recall@10: the share of the exact 10 nearest neighbours that the picked index returns.
One FAISS and one torch thread. The quick mode (default; `BENCH_FULL=1` for the full one)
shrinks the problem to 60 000 x 128 vectors and 200 queries (still above the threshold, so
still HNSW).

`knn_graph_workload` measures what the audit really asks of an index: the kNN graph of the
spectral clustering, every row's 10 nearest other rows (build + N queries), by
`auditor.checks.knn_graph.knn_graph` against exact FAISS brute force over the same rows, with
the recall@10 of the whole graph. Full: 200 000 x 512; quick: 60 000 x 128. One FAISS and one
BLAS thread, CPU seconds (one run each).
"""

from __future__ import annotations

import time
from typing import Any

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from auditor.checks.knn_graph import exact_graph, knn_graph, recall
from auditor.checks.neighbours import IndexHandle, IndexKind, build_index, choose_kind, search
from benchmarks import mode
from benchmarks.timing import median_seconds

FULL = {"vectors": 200_000, "dim": 512, "queries": 1_000}
QUICK = {"vectors": 60_000, "dim": 128, "queries": 200}
K, THRESHOLD, COMPONENTS, LATENT, NOISE, SEED = 10, 50_000, 40, 64, 0.3, 0
WARMUP, REPEATS = 1, 3
COMMAND = ".venv/bin/python -m benchmarks.run faiss_knn"


def mixture(n: int, dim: int, rng: np.random.Generator, basis: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """`n` float32 points: a random mixture centre plus latent spread, mapped through `basis`
    (LATENT x dim), plus isotropic noise of scale NOISE."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 20_000):
        m = min(20_000, n - start)
        latent = centres[rng.integers(len(centres), size=m)]
        latent += rng.standard_normal((m, LATENT), dtype=np.float32)
        out[start : start + m] = latent @ basis
        out[start : start + m] += NOISE * rng.standard_normal((m, dim), dtype=np.float32)
    return out


def _timed_build(vectors: np.ndarray, kind: IndexKind) -> tuple[IndexHandle, dict[str, float]]:
    """The index and its build's CPU and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    handle = build_index(vectors, kind)
    return handle, {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}


def faiss_knn() -> dict[str, Any]:
    quick = not mode.full()
    size = QUICK if quick else FULL
    n, dim, n_queries = size["vectors"], size["dim"], size["queries"]
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        rng = np.random.default_rng(SEED)
        basis = rng.standard_normal((LATENT, dim), dtype=np.float32) / np.sqrt(LATENT)
        centres = 4.0 * rng.standard_normal((COMPONENTS, LATENT), dtype=np.float32)
        vectors = mixture(n, dim, rng, basis, centres)
        queries = mixture(n_queries, dim, rng, basis, centres)
        kind = choose_kind(n, "auto", THRESHOLD)
        exact, exact_build = _timed_build(vectors, "flat")
        picked, picked_build = _timed_build(vectors, kind)
        del vectors
        truth = search(exact, queries, K).indices
        found = search(picked, queries, K).indices
        recall = np.mean([len(np.intersect1d(t, f)) / K for t, f in zip(truth, found, strict=True)])
        seconds = median_seconds(
            {"picked": lambda: search(picked, queries, K), "exact": lambda: search(exact, queries, K)},
            warmup=WARMUP, repeats=REPEATS,
        )
    finally:
        faiss.omp_set_num_threads(threads)
    return {
        "command": mode.prefix() + COMMAND,
        "setup": f"{n} x {dim} float32, {n_queries} queries, k={K}; Gaussian mixture of "
        f"{COMPONENTS} components in a {LATENT}-d subspace + noise {NOISE}, seed {SEED}; "
        f"1 FAISS thread; build: one run; query: median of {REPEATS} interleaved searches of "
        f"all queries after {WARMUP} warm-up",
        "quick": quick,
        "picked_kind": kind,
        "picked_params": "IndexHNSWFlat M=32, efSearch=128 (auditor.checks.neighbours)" if kind == "hnsw" else kind,
        "build_s": {
            "picked_cpu": round(picked_build["cpu"], 3), "picked_wall": round(picked_build["wall"], 3),
            "exact_cpu": round(exact_build["cpu"], 3), "exact_wall": round(exact_build["wall"], 3),
        },
        "query_s": {
            "picked_cpu": round(seconds["picked"]["cpu"], 4), "picked_wall": round(seconds["picked"]["wall"], 4),
            "exact_cpu": round(seconds["exact"]["cpu"], 4), "exact_wall": round(seconds["exact"]["wall"], 4),
        },
        "query_speedup_cpu": round(seconds["exact"]["cpu"] / seconds["picked"]["cpu"], 2),
        "query_speedup_wall": round(seconds["exact"]["wall"] / seconds["picked"]["wall"], 2),
        f"recall_at_{K}": round(float(recall), 4),
    }


GRAPH_COMMAND = ".venv/bin/python -m benchmarks.run knn_graph_workload"
GRAPH_TARGET = 10.0


def knn_graph_workload() -> dict[str, Any]:
    size = FULL if mode.full() else QUICK
    n, dim = size["vectors"], size["dim"]
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        rng = np.random.default_rng(SEED)
        basis = rng.standard_normal((LATENT, dim), dtype=np.float32) / np.sqrt(LATENT)
        centres = 4.0 * rng.standard_normal((COMPONENTS, LATENT), dtype=np.float32)
        vectors = mixture(n, dim, rng, basis, centres)
        with threadpool_limits(1):
            cpu = time.process_time()
            graph = knn_graph(vectors, K, seed=SEED)
            graph_s = time.process_time() - cpu
            cpu = time.process_time()
            exact = exact_graph(vectors, K)
            exact_s = time.process_time() - cpu
    finally:
        faiss.omp_set_num_threads(threads)
    return {
        "command": mode.prefix() + GRAPH_COMMAND,
        "setup": f"kNN graph (k={K}, every row's nearest other rows) of {n} x {dim} float32, "
        f"the Gaussian mixture of faiss_knn; 1 FAISS + 1 BLAS thread; CPU seconds, one run each",
        "quick": not mode.full(),
        "method": graph.method,
        "nlist": graph.nlist,
        "nprobe": graph.nprobe,
        "tuned_recall_at_10": round(graph.recall, 4),
        "graph_s": round(graph_s, 2),
        "exact_s": round(exact_s, 2),
        "speedup": round(exact_s / graph_s, 2),
        f"recall_at_{K}": round(recall(graph.indices, exact.indices), 4),
        "target_speedup_full": GRAPH_TARGET,
    }
