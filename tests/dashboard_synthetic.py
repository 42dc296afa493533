"""Many synthetic audits written as store rows directly (no model runs): the dashboard's
scale tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import yaml

from auditor.artefacts.embeddings import save_space
from auditor.artefacts.maps import save_maps
from auditor.checks.embedding_space import EmbeddingSpace
from auditor.results import Map2D
from auditor.store import (
    AlertRow,
    AuditRow,
    AuditStore,
    ChannelStatRow,
    ClusterRow,
    DriftStatRow,
    FindingRow,
    ModelVersionRow,
    RegisteredModelRow,
    ReviewRow,
)

from .evidence_examples import EXAMPLES


def seed_synthetic(
    url: str, artifacts_dir: Path, *, audits: int, samples: int, models: int = 3
) -> list[int]:
    """`audits` synthetic succeeded audits spread over `models` models (store rows only: four
    findings whose fingerprints repeat across a model's audits, two drift statistics, an alert,
    32 channel stats; every tenth finding reviewed); the newest audit also gets an embedding
    space of `samples` samples with a PCA map and eight clusters. Returns the audit ids."""
    rng = np.random.default_rng(0)
    store = AuditStore(url)
    ids = []
    with store.transaction() as session:
        versions = [
            ModelVersionRow(
                model=RegisteredModelRow(name=f"model-{m}"),
                version="1",
                uri=f"models:/model-{m}@prod",
                flavor="pytorch-pt2",
            )
            for m in range(models)
        ]
        session.add_all(versions)
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for n in range(audits):
            version = versions[n % models]
            when = start + timedelta(hours=n)
            audit = AuditRow(
                model_version=version, model_uri=version.uri, status="succeeded",
                config_yaml=yaml.safe_dump({"artifacts_dir": str(artifacts_dir)}), config_hash="0" * 64,
                code_version="test", started_at=when, finished_at=when + timedelta(minutes=5),
                layer="layer3", n_samples=samples, n_labelled=samples // 2,
            )  # fmt: skip
            audit.findings = [
                FindingRow(
                    kind=kind,
                    severity=severity,
                    title=f"{kind} of {version.model.name}",
                    probe="grayscale",
                    evidence=EXAMPLES[kind],
                    fingerprint=f"{version.model.name}-{kind}",
                    reviews=[ReviewRow(status="confirmed", reviewer="bench")]
                    if n % 10 == 0
                    else [],
                )
                for kind, severity in [
                    ("spurious_channels", "high"),
                    ("probe_sensitivity", "high"),
                    ("explanation_drift", "medium"),
                    ("unlabeled_subclass", "low"),
                ]
            ]
            audit.drift_stats = [
                DriftStatRow(
                    name=name,
                    baseline_audit_id=1,
                    value=value,
                    lower=0.0,
                    upper=1.0,
                    threshold=0.5,
                    bound="min",
                    drifted=value < 0.5,
                )
                for name, value in (
                    ("spearman", float(rng.uniform(0.3, 1))),
                    ("js_distance", float(rng.uniform(0, 0.2))),
                )
            ]
            audit.channel_stats = [
                ChannelStatRow(
                    layer="layer3",
                    channel=c,
                    relevance=float(32 - c),
                    rank=c + 1,
                    in_top_k=c < 3,
                    in_bottom_k=c >= 29,
                )
                for c in range(32)
            ]
            session.add(audit)
            session.flush()
            session.add(
                AlertRow(
                    audit_id=audit.id,
                    event="drift",
                    sink="log",
                    fingerprint="x",
                    severity="medium",
                    title="drift",
                    payload={},
                    status="sent",
                )
            )
            ids.append(audit.id)
        newest = session.get(AuditRow, ids[-1])
        newest.clusters = [
            ClusterRow(
                cluster=c,
                size=samples // 8,
                share=0.125,
                relevance_profile=[1.0] * 32,
                evidence={"confidence": 0.9},
            )
            for c in range(8)
        ]
    folder = artifacts_dir / f"audit-{ids[-1]}"
    space = EmbeddingSpace(
        layer="layer3", metric="cosine", vectors=rng.normal(size=(samples, 32)).astype(np.float32),
        ids=[f"s{i:05d}" for i in range(samples)], sets=["production"] * samples, roles=["production"] * samples,
        labels=np.full(samples, -1), predicted=rng.integers(0, 2, samples), class_names=["real", "fake"],
    )  # fmt: skip
    save_space(space, folder, float16_above=100_000)
    save_maps(
        [Map2D("pca", rng.normal(size=(samples, 2)).astype(np.float32), np.arange(samples))], folder
    )
    store.close()
    return ids
