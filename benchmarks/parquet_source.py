"""Peak memory of a Parquet sample set of 2 000 vs 20 000 rows, read the way an audit reads it.

Each table holds 64 x 64 PNG bytes (`auditor.demo.scenario.make_counterfeit_data`, seed 0,
the 2 000-row table the first rows of the 20 000-row one), an int label, a string id and a
`site` group column, written with row groups of 256 rows. A fresh child process per size
loads it with `auditor.data.samples.load_samples` (validation: ids unique, every image's
header) and reads every image once in batches of 64, as a streamed pass does; it reports
`VmHWM` (peak RSS of the whole process) and `VmRSS` after the imports. Target: the peak ratio
of 20 000 to 2 000 rows at most 1.3.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from auditor.config import Preprocess, SampleColumns, SampleSource
from auditor.data.samples import load_samples
from auditor.demo.scenario import make_counterfeit_data
from benchmarks.timing import status_kib

SIZES = (2_000, 20_000)
ROW_GROUP, BATCH, CHUNK = 256, 64, 2_000
ROOT = Path(__file__).resolve().parents[1]
COMMAND = ".venv/bin/python -m benchmarks.run parquet_source_memory"


def write_table(path: Path, n: int) -> None:
    """`n` rows of PNG bytes, label, id and site, written chunk by chunk."""
    with pq.ParquetWriter(path, _schema()) as writer:
        for start in range(0, n, CHUNK):
            images, labels = make_counterfeit_data(CHUNK, colour_shortcut=True, seed=start)
            rows = range(start, min(start + CHUNK, n))
            writer.write_table(
                pa.table(
                    {
                        "image": [_png(images[i - start]) for i in rows],
                        "label": labels[: len(rows)].astype(np.int64),
                        "id": [f"row-{i}" for i in rows],
                        "site": [f"site-{i % 3}" for i in rows],
                    },
                    schema=_schema(),
                ),
                row_group_size=ROW_GROUP,
            )


def child(path: str) -> None:
    """Load the table and read every image once; print seconds and memory as JSON."""
    baseline = status_kib("VmRSS:")
    start = time.perf_counter()
    source = SampleSource(
        name="production", uri=path, columns=SampleColumns(label="label", id="id", group="site")
    )
    checksum = 0.0
    with load_samples([source], tracking_uri="sqlite:///unused.db", preprocess=Preprocess()) as samples:
        for _rows, images in samples.images.batches(BATCH):
            checksum += float(images.mean())
    print(json.dumps({
        "seconds": time.perf_counter() - start,
        "baseline_mib": baseline / 1024,
        "peak_mib": status_kib("VmHWM:") / 1024,
        "checksum": checksum,
    }))  # fmt: skip


def parquet_source_memory() -> dict[str, Any]:
    """Peak RSS of loading and streaming 2 000 vs 20 000 Parquet rows (target ratio <= 1.3)."""
    runs = {}
    with tempfile.TemporaryDirectory(prefix="parquet-memory-") as tmp:
        for n in SIZES:
            path = Path(tmp) / f"samples-{n}.parquet"
            write_table(path, n)
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.parquet_source", str(path)],
                cwd=ROOT, check=True, capture_output=True, text=True,
            )  # fmt: skip
            runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
    small, large = (runs[n] for n in SIZES)
    return {
        "command": COMMAND,
        "setup": "Parquet table of 64x64 PNG bytes + label/id/site columns, row groups of 256; "
        "load_samples then every image read once in batches of 64, fresh process per size",
        "rows": list(SIZES),
        "peak_rss_mib": [round(r["peak_mib"], 1) for r in (small, large)],
        "baseline_rss_mib": [round(r["baseline_mib"], 1) for r in (small, large)],
        "peak_rss_ratio": round(large["peak_mib"] / small["peak_mib"], 3),
        "seconds": [round(r["seconds"], 1) for r in (small, large)],
        "target_ratio": 1.3,
    }


def _schema() -> pa.Schema:
    return pa.schema(
        [("image", pa.binary()), ("label", pa.int64()), ("id", pa.string()), ("site", pa.string())]
    )


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    child(sys.argv[1])
