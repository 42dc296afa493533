"""2-D maps of an audit's embeddings for the dashboard (the similarity of samples under a
learned model shown by a 2-D embedding: PCA [Pearson1901], t-SNE [VanDerMaaten2008]).

* `pca`: the projection on the two leading principal components (always made).
* `tsne`: t-SNE (van der Maaten 2008) minimising `KL(P || Q)` between Gaussian neighbour
  probabilities `p_ij` of the embeddings and Student-t ones `q_ij ~ (1 + ||y_i - y_j||^2)^-1`
  of the map; perplexity `min(30, (M - 1) / 3)`, PCA initialisation. A visualisation, not a
  measurement: its distances depend on the perplexity [Wattenberg2016].

UMAP is not offered: umap-learn installs without torch but pulls numba and llvmlite (210 MB),
imports in 4 s (26 s the first time) and compiles for 18 s on its first fit.

Maps of more than `max_samples` samples are made of a seeded subsample; `rows` says which.
Files: `map-<method>.npy` (M x 2 float32), `map-rows.npy` (M sample rows) and `maps.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from auditor.results import ArtefactRef, Map2D

MapMethod = Literal["pca", "tsne"]
MANIFEST_FILE = "maps.json"
ROWS_FILE = "map-rows.npy"


def map_rows(n: int, max_samples: int, seed: int) -> np.ndarray:
    """All rows, or a seeded sorted subsample of `max_samples` of them."""
    if n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))


def project(vectors: np.ndarray, method: MapMethod, seed: int) -> np.ndarray:
    """M x 2 float32 coordinates of the rows of `vectors` (M >= 3)."""
    if method == "pca":
        coords = PCA(n_components=2, random_state=seed).fit_transform(vectors)
    else:
        perplexity = min(30.0, (len(vectors) - 1) / 3)
        coords = TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed
        ).fit_transform(vectors)
    return coords.astype(np.float32)


def embedding_maps(
    vectors: np.ndarray, methods: list[MapMethod], *, seed: int, max_samples: int
) -> list[Map2D]:
    """PCA and the other configured maps of the same (sub)sample of rows."""
    rows = map_rows(len(vectors), max_samples, seed)
    chosen = vectors[rows]
    return [
        Map2D(method, project(chosen, method, seed), rows)
        for method in dict.fromkeys(["pca", *methods])
    ]


def save_maps(maps: list[Map2D], directory: Path) -> list[ArtefactRef]:
    """Write each map, the shared rows and the manifest `maps.json` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / ROWS_FILE, maps[0].rows)
    manifest = {"rows": ROWS_FILE, "maps": {m.method: f"map-{m.method}.npy" for m in maps}}
    for m in maps:
        np.save(directory / manifest["maps"][m.method], m.coords)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    files = [ROWS_FILE, *manifest["maps"].values(), MANIFEST_FILE]
    return [ArtefactRef("map", str((directory / name).absolute())) for name in files]


def load_maps(directory: Path) -> list[Map2D]:
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    rows = np.load(directory / manifest["rows"])
    return [
        Map2D(method, np.load(directory / name), rows) for method, name in manifest["maps"].items()
    ]
