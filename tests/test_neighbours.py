"""FAISS indexes (exact, IVF, HNSW), embedding files, and `auditor neighbours` on a stored audit
([Chen2019]: nearest examples of a sample in the metric of a feature layer)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from auditor.artefacts.embeddings import load_index, load_space, save_index
from auditor.audit.subclass_stage import subclass_stage
from auditor.checks import knn_graph as knn_graph_module
from auditor.checks import neighbours as index_module
from auditor.checks.embedding_space import LayerEmbeddings
from auditor.checks.knn_graph import exact_graph, knn_graph, recall
from auditor.checks.neighbours import build_index, choose_kind, nearest_other, search
from auditor.cli.neighbours import neighbours
from auditor.errors import SampleError, StoreError
from auditor.store import AuditStore

from .test_store import make_result
from .test_subclasses import run_synthetic, synthetic_audit, synthetic_config

pytestmark = pytest.mark.usefixtures("faiss_on_one_thread")


def random_vectors(n: int, seed: int, dim: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_auto_index_is_exact_up_to_the_threshold_and_hnsw_above():
    assert choose_kind(1000, "auto", threshold=1000) == "flat"
    assert choose_kind(1001, "auto", threshold=1000) == "hnsw"
    assert choose_kind(10, "ivf", threshold=1000) == "ivf"
    assert choose_kind(10**6, "flat", threshold=1000) == "flat"
    types = {"flat": faiss.IndexFlatL2, "ivf": faiss.IndexIVFFlat, "hnsw": faiss.IndexHNSWFlat}
    for kind, index_type in types.items():
        assert isinstance(build_index(random_vectors(500, 0), kind).index, index_type)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_recall_the_exact_neighbours(kind):
    data, queries = random_vectors(4000, 0), random_vectors(200, 1)
    exact = search(build_index(data, "flat"), queries, 10).indices
    approx = search(build_index(data, kind, seed=3), queries, 10).indices

    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9


def test_exact_search_returns_euclidean_distances_nearest_first():
    data = random_vectors(300, 0)
    found = search(build_index(data, "flat"), data[:5], 4)

    assert np.array_equal(found.indices[:, 0], np.arange(5))
    expected = np.linalg.norm(data[found.indices] - data[:5, None], axis=2)
    np.testing.assert_allclose(found.distances, expected, rtol=1e-4, atol=1e-3)
    assert np.all(np.diff(found.distances, axis=1) >= 0)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_and_load_give_the_same_index(kind, tmp_path):
    data, queries = random_vectors(2000, 0), random_vectors(50, 1)
    handle = build_index(data, kind, seed=5)
    loaded = load_index(save_index(handle, tmp_path / "index.faiss"))

    assert loaded.kind == kind and loaded.size == 2000
    before, after = search(handle, queries, 10), search(loaded, queries, 10)
    assert np.array_equal(before.indices, after.indices)
    np.testing.assert_array_equal(before.distances, after.distances)


def test_ivf_training_is_seeded():
    data, queries = random_vectors(3000, 0), random_vectors(100, 1)
    runs = [search(build_index(data, "ivf", seed=11), queries, 10).indices for _ in range(2)]
    assert np.array_equal(*runs)


def test_leave_one_out_skips_the_sample_itself_but_not_its_duplicate():
    data = random_vectors(100, 0)
    data[7] = data[3]
    found = nearest_other(build_index(data, "flat"), data)

    assert found.indices[3, 0] == 7 and found.indices[7, 0] == 3 and found.distances[3, 0] == 0
    assert np.all(found.indices[:, 0] != np.arange(100))


def test_embeddings_are_stored_as_float16_above_the_threshold(tmp_path):
    small = run_synthetic(tmp_path / "a", planted=0, float16_above=1000)
    large = run_synthetic(tmp_path / "b", planted=0, float16_above=100)

    folders = [small.artefacts[0].uri, large.artefacts[0].uri]
    assert [np.load(f).dtype for f in folders] == [np.float32, np.float16]
    space = load_space(tmp_path / "b" / "artifacts" / "audit-1")
    _, _, vectors = synthetic_audit(planted=0)
    np.testing.assert_allclose(space.vectors, vectors, rtol=1e-3)
    assert space.roles[0] == "reference" and space.roles[-1] == "production"


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(neighbours)
    return app


def run_cli(config_path, *args):
    return CliRunner().invoke(
        cli(), ["--config", str(config_path), *args], catch_exceptions=True, terminal_width=200
    )


def rows_of(output: str) -> list[list[str]]:
    """The table rows (cells split on the box characters) whose first cell is a rank."""
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in output.splitlines()]
    return [row for row in cells if row and row[0].isdigit()]


def write_config(tmp_path):
    config = synthetic_config(tmp_path)
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def stored_synthetic(tmp_path):
    """Audit 1 in the store, its embeddings and index in <artifacts_dir>/audit-1."""
    store = AuditStore(synthetic_config(tmp_path).store_url)
    store.start_audit(model_uri="m", config_yaml="", config_hash="h", code_version="0")
    store.close()
    run_synthetic(tmp_path)


def test_neighbours_lists_the_nearest_samples_of_a_stored_audit(tmp_path):
    stored_synthetic(tmp_path)
    result = run_cli(write_config(tmp_path), "--audit", "1", "--sample", "new-3", "-k", "5")

    assert result.exit_code == 0, result.output
    rows = rows_of(result.output)
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    # the planted sample's neighbours are planted samples (production, unlabelled, 'real')
    assert all(r[1].startswith("new-") and r[1] != "new-3" for r in rows)
    assert all(r[2:5] == ["production", "-", "real"] for r in rows)
    distances = [float(r[5]) for r in rows]
    assert distances == sorted(distances)

    reference = rows_of(
        run_cli(write_config(tmp_path), "--audit", "1", "--sample", "vali-1-0").output
    )
    assert len(reference) == 8 and all(r[4] == "fake" for r in reference)


def test_neighbours_finds_the_folder_the_store_registered(tmp_path):
    config_path = write_config(tmp_path)
    config = synthetic_config(tmp_path)
    samples, base, vectors = synthetic_audit()
    store = AuditStore(config.store_url)
    audit_id = store.start_audit(model_uri="m", config_yaml="", config_hash="h", code_version="0")

    folder = tmp_path / "elsewhere"  # not <artifacts_dir>/audit-<id>
    result = subclass_stage(
        samples, base, config, folder, embeddings=LayerEmbeddings("layer3", vectors)
    )
    audit = make_result()
    audit.findings.extend(result.findings)
    store.finish_audit(audit_id, audit, clusters=result.clusters, artefacts=result.artefacts)
    stored = store.get_audit(audit_id)
    store.close()
    assert [c.size for c in stored.clusters] == [c.size for c in result.clusters]
    assert stored.findings[-1].kind == "unlabeled_subclass"
    assert stored.findings[-1].typed_evidence.members == result.findings[0].evidence.members

    found = run_cli(config_path, "--audit", str(audit_id), "--sample", "prod-0-1", "-k", "3")
    assert found.exit_code == 0, found.output
    assert len(rows_of(found.output)) == 3


def test_neighbours_names_a_missing_audit_or_sample(tmp_path):
    stored_synthetic(tmp_path)
    config_path = write_config(tmp_path)

    missing = run_cli(config_path, "--audit", "99", "--sample", "new-3")
    assert isinstance(missing.exception, StoreError)
    assert "audit 99 does not exist in database" in str(missing.exception)
    unknown = run_cli(config_path, "--audit", "1", "--sample", "nope")
    assert isinstance(unknown.exception, SampleError) and "'nope'" in str(unknown.exception)


def test_neighbours_without_a_database_creates_none(tmp_path, monkeypatch):
    """Without --config the default database is looked up, never created: a missing one is
    named as missing (it answered "no embedding index" and left ./.auditor/auditor.db)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUDITOR_DB_URL", raising=False)
    result = CliRunner().invoke(cli(), ["--audit", "1", "--sample", "x"])
    assert isinstance(result.exception, StoreError)
    assert "auditor.db does not exist" in str(result.exception)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_indexes_built_from_shards_recall_as_built_at_once(kind, monkeypatch):
    data, queries = random_vectors(4000, 0), random_vectors(200, 1)
    exact = search(build_index(data, "flat"), queries, 10).indices
    monkeypatch.setattr(index_module, "SHARD", 700)  # 6 shards
    assert np.array_equal(search(build_index(data, "flat"), queries, 10).indices, exact)
    approx = search(build_index(data.astype(np.float16), kind, seed=3), queries, 10).indices
    assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)]) >= 0.9


@pytest.mark.parametrize("n", [300, 2_500])
def test_knn_graph_is_exact_below_the_switch_and_tuned_above(n, monkeypatch):
    """Every row's k nearest other rows: exact brute force up to EXACT_UP_TO rows; above it the
    cell-batched inverted file, whose nprobe is tuned until the sampled recall reaches the
    target, and whose graph then has recall@10 >= 0.95 against exact search."""
    monkeypatch.setattr(knn_graph_module, "EXACT_UP_TO", 1_000)
    monkeypatch.setattr(knn_graph_module, "TUNE_QUERIES", 200)
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(8, 16)).astype(np.float32) * 4
    x = (centres[rng.integers(8, size=n)] + rng.normal(size=(n, 16))).astype(np.float32)
    graph = knn_graph(x, 10, seed=3)
    truth = exact_graph(x, 10)
    assert graph.indices.shape == (n, 10)
    assert not (graph.indices == np.arange(n)[:, None]).any()  # never itself
    assert (np.diff(graph.distances, axis=1) >= -1e-5).all()  # nearest first
    if n <= 1_000:
        assert graph.method == "exact"
        brute = np.linalg.norm(x[:, None] - x[None], axis=2)
        np.fill_diagonal(brute, np.inf)
        np.testing.assert_allclose(graph.distances, np.sort(brute, axis=1)[:, :10], rtol=1e-4, atol=1e-4)
    else:
        assert graph.method == "cells" and graph.recall >= knn_graph_module.TARGET_RECALL
        assert 1 <= graph.nprobe <= graph.nlist == round(2 * np.sqrt(n))
        assert recall(graph.indices, truth.indices) >= 0.95
        again = knn_graph(x, 10, seed=3)
        np.testing.assert_array_equal(again.indices, graph.indices)  # seeded
