"""2-D maps of the embeddings for the dashboard (t-SNE [VanDerMaaten2008]; PCA [Pearson1901]):
shapes, determinism, subsampling and the files the dashboard reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from auditor.artefacts.maps import embedding_maps, load_maps, map_rows, project, save_maps


@pytest.fixture(autouse=True)
def _one_thread():
    """t-SNE's OpenMP threads oversubscribe the shared test machine (7 s instead of 0.6 s)."""
    with threadpool_limits(limits=1):
        yield


def two_blobs(n: int = 120, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs (`n` each) 8 standard deviations apart; returns vectors and blob."""
    rng = np.random.default_rng(seed)
    offset = np.zeros(dim)
    offset[0] = 8.0
    vectors = np.concatenate(
        [rng.standard_normal((n, dim)), offset + rng.standard_normal((n, dim))]
    )
    return vectors.astype(np.float32), np.repeat([0, 1], n)


def test_pca_is_always_made_and_separates_the_blobs():
    vectors, blob = two_blobs()
    maps = embedding_maps(vectors, [], seed=0, max_samples=1000)

    assert [m.method for m in maps] == ["pca"]
    (pca,) = maps
    assert pca.coords.shape == (240, 2) and pca.coords.dtype == np.float32
    assert np.array_equal(pca.rows, np.arange(240))
    first = pca.coords[:, 0]
    assert (
        first[blob == 0].max() < first[blob == 1].min()
        or first[blob == 1].max() < first[blob == 0].min()
    )


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_maps_are_deterministic_and_keep_neighbours_together(method):
    vectors, blob = two_blobs(n=60)
    first, second = project(vectors, method, seed=3), project(vectors, method, seed=3)

    assert first.shape == (120, 2)
    np.testing.assert_array_equal(first, second)
    distances = np.linalg.norm(first[:, None] - first[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    assert np.mean(blob[distances.argmin(axis=1)] == blob) > 0.95


def test_large_sets_are_mapped_on_one_seeded_subsample():
    vectors, _ = two_blobs(n=100)
    maps = embedding_maps(vectors, ["pca", "tsne"], seed=1, max_samples=50)

    assert [m.method for m in maps] == ["pca", "tsne"]
    rows = maps[0].rows
    assert len(rows) == 50 and np.all(np.diff(rows) > 0) and rows.max() < 200
    assert all(np.array_equal(m.rows, rows) and m.coords.shape == (50, 2) for m in maps)
    np.testing.assert_array_equal(rows, map_rows(200, 50, seed=1))
    assert not np.array_equal(rows, map_rows(200, 50, seed=2))


def test_maps_round_trip_through_their_files(tmp_path):
    vectors, _ = two_blobs(n=40)
    maps = embedding_maps(vectors, ["tsne"], seed=0, max_samples=60)
    refs = save_maps(maps, tmp_path)

    manifest = json.loads((tmp_path / "maps.json").read_text())
    assert manifest == {
        "rows": "map-rows.npy",
        "maps": {"pca": "map-pca.npy", "tsne": "map-tsne.npy"},
    }
    assert {r.kind for r in refs} == {"map"} and all(
        tmp_path.joinpath(r.uri).exists() for r in refs
    )
    loaded = load_maps(tmp_path)
    assert [m.method for m in loaded] == ["pca", "tsne"]
    for before, after in zip(maps, loaded):
        np.testing.assert_array_equal(before.coords, after.coords)
        np.testing.assert_array_equal(before.rows, after.rows)
