"""Novel clusters (auditor.checks.novelty): production clusters far from every reference sample
whatever the model predicts on them, decided against permuted reference / production roles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from auditor.audit.subclass_stage import subclass_stage
from auditor.checks.embedding_space import LayerEmbeddings
from auditor.checks.novelty import NoveltyCriteria, cluster_novelty, distance_test, share_p_value
from auditor.config import NoveltySettings

from .test_subclasses import synthetic_audit, synthetic_config

pytestmark = pytest.mark.usefixtures("faiss_on_one_thread")


def _stage(tmp_path: Path, **planting):
    samples, base, vectors = synthetic_audit(**planting)
    config = synthetic_config(tmp_path)
    return subclass_stage(
        samples, base, config, config.audit_artifact_dir(1),
        embeddings=LayerEmbeddings("layer3", vectors),
    )  # fmt: skip


def test_mixed_predictions_on_a_new_subpopulation_are_a_novel_cluster(tmp_path):
    """The observed miss: a sub-population absent from the reference, predicted 61/39 at 0.75
    confidence; `unlabeled_subclass` needs one confident class and stays silent."""
    result = _stage(tmp_path, planted=120, planted_fake_share=0.39, planted_logit=0.55)

    assert [f.kind for f in result.findings] == ["novel_cluster"]
    finding = result.findings[0]
    e = finding.evidence
    assert e.n_production == 120 and e.n_reference == 0 and e.size == 120
    assert e.predictions == {"fake": 47, "real": 73}
    assert 0.7 < e.confidence < 0.8 and e.reference_confidence > 0.95
    assert e.share_p_value < 1e-10 and e.distance_p_value == 1 / (e.n_permutations + 1)
    assert e.distance_ratio > 1.5
    assert e.confidence_p_value < e.alpha  # hesitant, but 29 % of production: high
    assert finding.severity == "high" and e.production_share > 0.1
    assert len(e.members) == 20 and all(m.startswith("new-") for m in e.members)
    assert all(r.startswith("vali-") for r in e.nearest_reference)
    assert all(d > 0 for d in e.member_distances)


def test_a_confident_subclass_is_reported_once_as_unlabeled_subclass(tmp_path):
    result = _stage(tmp_path, planted=40)

    assert [f.kind for f in result.findings] == ["unlabeled_subclass"]
    novel = [c for c in result.clusters if c.evidence["novelty"]["novel"]]
    assert [c.size for c in novel] == [40]  # novel too, but the subclass is more specific


def test_share_p_value_is_the_permutation_distribution_of_the_reference_count():
    rng = np.random.default_rng(0)
    roles = np.zeros(200, dtype=bool)
    roles[:80] = True
    cluster = np.arange(30)
    counts = np.array([rng.permutation(roles)[cluster].sum() for _ in range(20000)])
    for observed in (5, 9, 12, 15):
        assert share_p_value(observed, 30, 80, 200) == pytest.approx(
            (counts <= observed).mean(), abs=0.01
        )


CRITERIA = NoveltyCriteria(**{**NoveltySettings().model_dump(), "permutations": 99})


def _blobs(rng: np.random.Generator, n: int = 240) -> tuple[np.ndarray, np.ndarray]:
    centres = 3 * rng.standard_normal((3, 8))
    assignment = rng.integers(0, 3, n)
    return (centres[assignment] + rng.standard_normal((n, 8))).astype(np.float32), assignment


def test_distance_test_holds_its_rate_when_roles_are_exchangeable():
    rng = np.random.default_rng(1)
    p_values = []
    for _ in range(40):
        x, assignment = _blobs(rng)
        roles = rng.random(len(x)) < 0.5
        test = distance_test(x, np.flatnonzero(assignment == 0), roles, CRITERIA, rng)
        p_values.append(test.p_value)
    # super-uniform: at most 10 of 40 below 0.1 (binomial(40, 0.1) tail 0.008)
    assert sum(p <= 0.1 for p in p_values) <= 10
    assert np.median(p_values) > 0.25


def test_no_novel_cluster_at_the_stated_rate_when_production_is_drawn_like_the_reference():
    """alpha = 0.2: the share of audits with any novel cluster stays at most alpha (30 audits
    of exchangeable roles: 12 or more would have probability 0.01 at rate 0.2)."""
    rng = np.random.default_rng(2)
    criteria = NoveltyCriteria(
        **{**NoveltySettings().model_dump(), "alpha": 0.2, "permutations": 49}
    )
    alarms = 0
    for _ in range(30):
        x, assignment = _blobs(rng)
        roles = rng.random(len(x)) < 0.5
        stats = cluster_novelty(
            x, assignment, roles, rng.random(len(x)), ["a"] * len(x), criteria, 0
        )
        alarms += any(s.novel for s in stats)
    assert alarms < 12
    # and one such audit whose cluster 0 holds production samples only
    x, assignment = _blobs(np.random.default_rng(3))
    roles = np.random.default_rng(4).random(len(x)) < 0.5
    roles[assignment == 0] = False
    stats = cluster_novelty(x, assignment, roles, np.ones(len(x)), ["a"] * len(x), criteria, 0)
    assert [s.novel for s in stats] == [c == 0 for c in range(3)]
