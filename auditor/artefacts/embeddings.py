"""The files that keep an audit's embedding space and its FAISS index with the audit.

Files in an audit's folder: `embeddings.npy` (N x C, float32, or float16 above a size
threshold), `ids.json` (layer, metric and, per sample, id, set, role, label, predicted class)
and `index.faiss` (the index of all samples, with its search parameters).
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from auditor.checks.embedding_space import EmbeddingSpace
from auditor.checks.neighbours import IndexHandle
from auditor.errors import SampleError
from auditor.results import ArtefactRef

EMBEDDINGS_FILE = "embeddings.npy"
IDS_FILE = "ids.json"
INDEX_FILE = "index.faiss"


def sample_row(space: EmbeddingSpace, sample_id: str) -> int:
    """The row of a sample id, or `SampleError` naming the id."""
    try:
        return space.ids.index(sample_id)
    except ValueError:
        raise SampleError(
            f"sample id '{sample_id}' is not among the {len(space.ids)} samples of this audit",
            f"use an id from {IDS_FILE} in the audit's folder (e.g. '{space.ids[0]}')",
        ) from None


def save_space(space: EmbeddingSpace, directory: Path, float16_above: int) -> list[ArtefactRef]:
    """Write `embeddings.npy` (float16 when there are more than `float16_above` samples) and
    `ids.json` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    dtype = np.float16 if len(space.ids) > float16_above else np.float32
    vectors_path = directory / EMBEDDINGS_FILE
    np.save(vectors_path, space.vectors.astype(dtype))
    ids_path = directory / IDS_FILE
    ids_path.write_text(
        json.dumps(
            {
                "layer": space.layer,
                "metric": space.metric,
                "ids": space.ids,
                "sets": space.sets,
                "roles": space.roles,
                "labels": space.labels.tolist(),
                "predicted": space.predicted.tolist(),
                "class_names": space.class_names,
            }
        )
    )
    return [
        ArtefactRef("embeddings", str(vectors_path.absolute())),
        ArtefactRef("sample_ids", str(ids_path.absolute())),
    ]


def load_space(directory: Path) -> EmbeddingSpace:
    """Read what `save_space` wrote (embeddings as float32)."""
    meta = json.loads((directory / IDS_FILE).read_text())
    return EmbeddingSpace(
        layer=meta["layer"],
        metric=meta["metric"],
        vectors=np.load(directory / EMBEDDINGS_FILE).astype(np.float32),
        ids=meta["ids"],
        sets=meta["sets"],
        roles=meta["roles"],
        labels=np.asarray(meta["labels"], dtype=np.int64),
        predicted=np.asarray(meta["predicted"], dtype=np.int64),
        class_names=meta["class_names"],
    )


def save_index(handle: IndexHandle, path: Path) -> Path:
    """Write the index (with its search parameters) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(handle.index, str(path))
    return path


def load_index(path: Path) -> IndexHandle:
    """Read what `save_index` wrote, with its kind."""
    index = faiss.read_index(str(path))
    if isinstance(index, faiss.IndexHNSWFlat):
        return IndexHandle(index, "hnsw")
    if isinstance(index, faiss.IndexIVFFlat):
        return IndexHandle(index, "ivf")
    return IndexHandle(index, "flat")
