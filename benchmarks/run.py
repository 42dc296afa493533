"""Run the benchmarks (`make bench`): print one JSON object on stdout and merge it into
`benchmarks/results.json`.

    python -m benchmarks.run [NAME ...]     # default: every benchmark in BENCHMARKS

A benchmark is a function returning a JSON-able dict of figures (each with the command that
reproduces it); adding one is one entry in `BENCHMARKS`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auditor.execution import progress
from benchmarks import (
    audit_cost,
    dropout,
    faiss_knn,
    families,
    parquet_source,
    relevance,
    scaling,
    srd,
)

Benchmark = Callable[[], dict[str, Any]]

BENCHMARKS: list[Benchmark] = [
    relevance.lrp_channel_relevance,
    srd.bench_srd,
    families.family_costs,
    dropout.dropout_validation_cost,
    faiss_knn.faiss_knn,
    faiss_knn.knn_graph_workload,
    audit_cost.audit_cost,
    scaling.audit_scaling,
    scaling.streaming_memory,
    parquet_source.parquet_source_memory,
]

RESULTS = Path(__file__).with_name("results.json")


def main(names: list[str]) -> int:
    known = {b.__name__: b for b in BENCHMARKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"error: unknown benchmark {unknown[0]} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    progress.enabled = False  # bars on stderr would be timed with the passes
    results = {name: known[name]() for name in names or known}
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**stored, **results}, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
