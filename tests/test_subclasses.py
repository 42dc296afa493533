"""Unlabeled subclasses [Hagele2020]: clusters of production samples that the model
predicts confidently but that lie far from the reference set of their class, or are explained
by a different relevance strategy."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.artefacts.report import finding_dict, report_section
from auditor.audit.passes import RelevancePass, relevance_pass
from auditor.audit.stages import PassRunner
from auditor.audit.subclass_stage import (
    clustering_params,
    layer_embeddings,
    subclass_criteria,
    subclass_stage,
)
from auditor.audit.worker import WorkerModel
from auditor.checks.clustering import eigengap_k, spectral_clusters
from auditor.checks.clusters import ClusterStats
from auditor.checks.embedding_space import LayerEmbeddings, prepare
from auditor.checks.neighbours import build_index
from auditor.checks.subclasses import subclass_signals
from auditor.config import AuditConfig, SubclassThresholds
from auditor.data.samples import SampleSet, load_samples
from auditor.demo.scenario import make_counterfeit_data
from auditor.execution import LocalExecutor
from auditor.execution.sketches import TopRows
from auditor.model.graph import ModelGraph
from auditor.tracking.resolve import load_model

from .conftest import Scenario, audit_config

pytestmark = pytest.mark.usefixtures("faiss_on_one_thread")


CHANNELS = 16


def synthetic_audit(
    n_per_class: int = 150,
    planted: int = 40,
    seed: int = 0,
    planted_fake_share: float = 0.0,
    planted_logit: float = 4.0,
) -> tuple[SampleSet, RelevancePass, np.ndarray]:
    """Pooled embeddings of two classes, drawn alike for the reference set `validation`
    (labelled) and the set `production`; `planted` more production samples (ids `new-*`) come
    from a third blob and are predicted as class 0 with high confidence, with class 0's
    relevance profile (the first `planted_fake_share` of them as class 1; their logits
    `+-planted_logit`: 4 is 0.9997 confidence, 0.55 is 0.75). Returns samples, the relevance
    pass and the embeddings."""
    rng = np.random.default_rng(seed)
    means = 2.0 + 2.0 * rng.random((3, CHANNELS))
    profiles = rng.dirichlet(np.ones(CHANNELS), size=2)
    blocks, classes, ids, sets = [], [], [], []
    for name, n in (("validation", n_per_class), ("production", n_per_class)):
        for c in (0, 1):
            blocks.append(means[c] + 0.4 * rng.standard_normal((n, CHANNELS)))
            classes += [c] * n
            sets += [name] * n
            ids += [f"{name[:4]}-{c}-{i}" for i in range(n)]
    blocks.append(means[2] + 0.4 * rng.standard_normal((planted, CHANNELS)))
    n_fake = round(planted_fake_share * planted)
    classes += [1] * n_fake + [0] * (planted - n_fake)
    sets += ["production"] * planted
    ids += [f"new-{i}" for i in range(planted)]
    vectors = np.concatenate(blocks).astype(np.float32)
    predicted = np.array(classes)
    n = len(vectors)
    scale = np.where(np.arange(n) < n - planted, 4.0, planted_logit)[:, None]
    logits = scale * np.where(np.arange(2)[None, :] == predicted[:, None], 1.0, -1.0)
    logits = logits + 0.3 * np.minimum(scale, 1.0) * rng.standard_normal((n, 2))
    relevance = np.abs(profiles[predicted] + 0.002 * rng.standard_normal((n, CHANNELS)))
    labels = np.where(np.array(sets) == "validation", predicted, -1)
    samples = SampleSet(
        images=np.zeros((n, 3, 1, 1), np.float32),
        labels=labels.astype(np.int64),
        ids=ids,
        groups=None,
        set_names=sets,
        class_names=["real", "fake"],
    )
    top = TopRows(9, CHANNELS)  # 1 x 1 activations: the score is the positive part
    top.update(np.arange(n), np.maximum(vectors, 0).astype(np.float64))
    base = RelevancePass(
        logits=torch.tensor(logits, dtype=torch.float32),
        channel_activation=torch.from_numpy(vectors),
        channel_relevance=torch.tensor(relevance, dtype=torch.float32),
        top_activations=top,
    )
    return samples, base, vectors


def synthetic_config(tmp_path: Path, **subclasses) -> AuditConfig:
    return AuditConfig.model_validate(
        {
            "model": {"uri": "unused"},
            "samples": [
                {"name": "validation", "uri": "unused", "role": "reference"},
                {"name": "production", "uri": "unused"},
            ],
            "store_url": f"sqlite:///{tmp_path / 'auditor.db'}",
            "artifacts_dir": str(tmp_path / "artifacts"),
            "subclasses": subclasses,
        }
    )


def run_synthetic(tmp_path: Path, planted: int = 40, **subclasses):
    samples, base, vectors = synthetic_audit(planted=planted)
    config = synthetic_config(tmp_path, **subclasses)
    return subclass_stage(
        samples, base, config, config.audit_artifact_dir(1),
        embeddings=LayerEmbeddings("layer3", vectors),
    )  # fmt: skip


def test_planted_subclass_is_found_with_its_nearest_references(tmp_path):
    result = run_synthetic(tmp_path)

    assert [f.kind for f in result.findings] == ["unlabeled_subclass"]
    evidence = result.findings[0].evidence
    assert evidence.class_name == "real" and evidence.class_index == 0
    assert evidence.n_production == 40 and evidence.n_reference == 0
    assert evidence.signals == ["distance"] and evidence.distance_ratio > 2
    assert evidence.profile_distance < 0.1  # same strategy as the reference 'real' samples
    assert len(evidence.members) == 20  # capped at subclasses.evidence_samples
    assert all(m.startswith("new-") for m in evidence.members)
    # each member's nearest reference sample is a validation sample predicted 'real'
    assert all(r.startswith("vali-0-") for r in evidence.nearest_reference)
    # every sample is in exactly one cluster; one cluster holds the planted samples only
    assert sum(c.size for c in result.clusters) == 640
    planted = [c for c in result.clusters if c.evidence["n_reference"] == 0]
    assert [c.size for c in planted] == [40]
    assert planted[0].evidence["predictions"] == {"real": 40}
    assert len(planted[0].relevance_profile) == CHANNELS


def test_report_section_and_findings_are_plain_json(tmp_path):
    result = run_synthetic(tmp_path)
    section = json.loads(json.dumps(report_section(result)))

    assert section["k"] == result.k and section["maps"] == ["pca"]
    assert [c["size"] for c in section["clusters"]] == [c.size for c in result.clusters]
    assert {a["kind"] for a in section["artefacts"]} == {
        "embeddings",
        "sample_ids",
        "embedding_index",
        "map",
    }
    finding = json.loads(json.dumps(finding_dict(result.findings[0])))
    assert finding["kind"] == "unlabeled_subclass"
    assert finding["evidence"] == result.findings[0].evidence.model_dump()


def test_production_drawn_like_the_reference_gives_no_finding(tmp_path):
    result = run_synthetic(tmp_path, planted=0)

    assert result.findings == []
    assert result.k >= 2 and sum(c.size for c in result.clusters) == 600
    for cluster in result.clusters:
        e = cluster.evidence
        assert e["label_purity"] == 1.0 and e["error_rate"] == 0.0
        assert e["distance_ratio"] < 1.5


def test_subsampled_clustering_assigns_every_sample(tmp_path):
    result = run_synthetic(tmp_path, cluster_samples=200)

    assert sum(c.size for c in result.clusters) == 640
    assert [f.evidence.class_name for f in result.findings] == ["real"]


def test_clusters_and_findings_are_deterministic(tmp_path):
    first = run_synthetic(tmp_path / "a")
    second = run_synthetic(tmp_path / "b")

    assert first.clusters == second.clusters and first.findings == second.findings
    _, _, vectors = synthetic_audit()
    x = prepare(vectors, "cosine")
    config = synthetic_config(tmp_path)
    runs = [
        spectral_clusters(x, clustering_params(config.subclasses), seed=0, index=build_index(x, "flat"))
        for _ in range(2)
    ]
    assert np.array_equal(runs[0].assignment, runs[1].assignment)
    # clusters are numbered by size, largest first
    sizes = np.bincount(runs[0].assignment)
    assert list(sizes) == sorted(sizes, reverse=True)


def test_fixed_k_overrides_the_eigengap(tmp_path):
    result = run_synthetic(tmp_path, k=4)

    assert result.k == 4 and len(result.clusters) == 4


def test_eigengap_picks_the_largest_gap_after_the_first_eigenvalue():
    values = np.array([0.0, 0.01, 0.02, 0.5, 0.55, 0.6])
    assert eigengap_k(values, k_max=5) == 3
    assert eigengap_k(np.array([0.0, 0.0, 0.4, 0.41, 0.42]), k_max=4) == 2


def test_without_reference_samples_there_are_clusters_but_no_findings(tmp_path):
    samples, base, vectors = synthetic_audit()
    config = synthetic_config(tmp_path)
    config.samples[0].role = "production"

    result = subclass_stage(
        samples, base, config, tmp_path / "out", embeddings=LayerEmbeddings("layer3", vectors)
    )

    assert result.findings == [] and result.clusters
    assert "no reference samples" in result.note


STATS = ClusterStats(
    cluster=3, size=40, n_reference=0, n_production=40, reference_share=0.0,
    predictions={"real": 40}, class_index=0, class_name="real", prediction_share=1.0,
    confidence=0.99, n_labelled=0, label_purity=None, error_rate=None, member_distance=2.0,
    reference_distance=1.0, reference_members_distance=None, distance_ratio=1.2,
    profile_distance=0.3,
)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "signals"),
    [
        ({}, ["strategy"]),  # near the reference, but a different relevance strategy
        ({"distance_ratio": 3.0}, ["distance", "strategy"]),
        ({"distance_ratio": 3.0, "profile_distance": 0.01}, ["distance"]),
        ({"profile_distance": 0.01}, []),  # near, same strategy
        ({"reference_share": 0.2}, []),  # reference share 0.2 > 0.25 * 0.5: not production-made
        ({"size": 5}, []),
        ({"prediction_share": 0.7}, []),
        ({"confidence": 0.6}, []),
        ({"profile_distance": None}, []),
    ],
)
def test_signals_need_a_confident_production_cluster(change, signals):
    stats = replace(STATS, **change)
    assert subclass_signals(stats, 0.5, subclass_criteria(SubclassThresholds())) == signals


# ---- the demo's counterfeit detector ---------------------------------------------------------


def new_generator_images(n: int, seed: int) -> np.ndarray:
    """Images of a generator the detector never saw: the scenario's images without tint, with
    a coarse 2 x 2-block grid artefact (amplitude 0.1) instead of the fine checkerboard."""
    images, _ = make_counterfeit_data(n, colour_shortcut=False, seed=seed)
    grid = (np.add.outer(np.arange(64) // 2, np.arange(64) // 2) % 2) * 2.0 - 1.0
    return np.rint(np.clip(images + 25.5 * grid[:, :, None], 0, 255)).astype(np.uint8)


def audit_embeddings(config: AuditConfig):
    """The audit pipeline up to the relevance pass, then the subclass check."""
    loaded = load_model(config.model.uri, tracking_uri=config.tracking_uri, trusted=False)
    graph = ModelGraph.from_program(loaded.program)
    model = WorkerModel(
        graph.split(graph.default_layer()), config.preprocess, config.relevance.composite,
        config.relevance.epsilon,
    )  # fmt: skip
    executor = LocalExecutor()
    with load_samples(
        config.samples, tracking_uri=config.tracking_uri, preprocess=config.preprocess
    ) as samples:
        base = relevance_pass(
            executor, model, samples.images, None, config.pass_batch_size,
            gallery_size=config.gallery.samples_per_channel,
        )  # fmt: skip
        runner = PassRunner(executor, model, samples.images, config.pass_batch_size, config.seed)
        embeddings = layer_embeddings(runner, graph, base, config.subclasses.embedding_layer)
        return subclass_stage(
            samples, base, config, config.audit_artifact_dir(1), embeddings=embeddings
        )


def scenario_config(scenario: Scenario, tmp_path: Path, extra: list[tuple[str, Path]] = ()):
    config = audit_config(
        scenario,
        tmp_path,
        samples=[("validation", scenario.validation), ("production", scenario.production), *extra],
        artifacts_dir=str(tmp_path / "artifacts"),
    )
    config["samples"][0]["role"] = "reference"
    return AuditConfig.model_validate(config)


@pytest.mark.slow
def test_unseen_generator_in_production_is_an_unlabeled_subclass(shortcut_scenario, tmp_path):
    path = tmp_path / "new-generator.npz"
    images = new_generator_images(60, seed=7)
    np.savez(path, images=images, ids=np.array([f"gen-{i:03d}" for i in range(len(images))]))

    result = audit_embeddings(scenario_config(shortcut_scenario, tmp_path, [("new", path)]))

    findings = [f for f in result.findings if f.kind == "unlabeled_subclass"]
    assert len(findings) == 1
    evidence = findings[0].evidence
    # the detector calls the unseen generator's fakes 'real', confidently: the validation
    # error cannot show it, the feature space does
    assert evidence.class_name == "real" and evidence.confidence > 0.95
    assert evidence.distance_ratio > 2 and evidence.n_reference == 0
    assert all(m.startswith("gen-") for m in evidence.members)
    assert all(r.startswith("val-") for r in evidence.nearest_reference)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "layer", "channels"),
    [("shortcut_scenario", None, 32), ("control_scenario", "layer2", 16)],
)
def test_production_like_validation_gives_no_unlabeled_subclass(
    name, layer, channels, request, tmp_path
):
    config = scenario_config(request.getfixturevalue(name), tmp_path)
    config.subclasses.embedding_layer = layer

    result = audit_embeddings(config)

    assert result.findings == []
    assert result.layer == (layer or "layer3") and len(result.clusters) >= 2
    assert np.load(config.audit_artifact_dir(1) / "embeddings.npy").shape == (600, channels)
    assert all(c.evidence["distance_ratio"] < 2 for c in result.clusters)


def test_too_few_samples_still_get_their_index_but_no_clusters(tmp_path):
    samples, base, vectors = synthetic_audit(n_per_class=4, planted=0)
    config = synthetic_config(tmp_path)

    result = subclass_stage(
        samples, base, config, tmp_path / "out", embeddings=LayerEmbeddings("layer3", vectors)
    )

    assert result.clusters == [] and result.findings == [] and result.maps == []
    assert "at least 20" in result.note
    assert {a.kind for a in result.artefacts} == {"embeddings", "sample_ids", "embedding_index"}
