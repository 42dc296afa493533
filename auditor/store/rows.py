"""Typed audit results (`auditor.results`) turned into store rows, and back where drift needs it.

Everything here runs inside the caller's transaction; nothing commits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
from sqlalchemy import Insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from auditor import results
from auditor.evidence import FINDING_KINDS
from auditor.store.schema import (
    ArtefactRow,
    ChannelStatRow,
    ClusterRow,
    DriftStatRow,
    DropoutCondition,
    DropoutResultRow,
    FindingRow,
    ModelVersionRow,
    ProbeResultRow,
    ProbeVariant,
    RegisteredModelRow,
    RelevanceBootstrapRow,
)

BOOTSTRAP_DTYPE = np.dtype("<f4")


def finding_fingerprint(finding: results.Finding, model_name: str, layer: str) -> str:
    """sha256 of kind, probe, model name, layer and the evidence fields its kind declares
    (`FindingKind.identity`: its sorted channel set, the class of a per-class finding, the
    statistic of a drift finding): the same finding in consecutive audits of a model gets the
    same fingerprint."""
    identity = FINDING_KINDS.get(finding.kind).identity(finding.evidence)
    key = [finding.kind, finding.probe, model_name, layer, *identity]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def insert_for(session: Session, table: type) -> Insert:
    """An INSERT of the session's dialect, which knows `on_conflict_do_*` (SQLite, PostgreSQL)."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    return insert(table)


def upsert_model_version(session: Session, model: results.ModelRef) -> int:
    """Id of the row of `model`, inserted or updated (uri, flavour, run) in place; safe when
    several auditors register the same model at once.

    A model without a version (a local file) is keyed by its URI instead."""
    session.execute(
        insert_for(session, RegisteredModelRow)
        .values(name=model.name)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    model_id = session.scalars(
        select(RegisteredModelRow.id).where(RegisteredModelRow.name == model.name)
    ).one()
    values = {"uri": model.uri, "flavor": model.flavor, "run_id": model.run_id}
    statement = (
        insert_for(session, ModelVersionRow)
        .values(model_id=model_id, version=model.version or model.uri, **values)
        .on_conflict_do_update(index_elements=["model_id", "version"], set_=values)
        .returning(ModelVersionRow.id)
    )
    return session.scalars(statement).one()


def channel_rows(table: results.ChannelTable) -> list[ChannelStatRow]:
    order = sorted(range(len(table.relevance)), key=lambda c: -table.relevance[c])
    rank = {channel: position + 1 for position, channel in enumerate(order)}
    top, bottom = set(table.top_k), set(table.bottom_k)
    return [
        ChannelStatRow(
            layer=table.layer,
            channel=channel,
            relevance=value,
            rank=rank[channel],
            in_top_k=channel in top,
            in_bottom_k=channel in bottom,
        )
        for channel, value in enumerate(table.relevance)
    ]


def dropout_rows(
    dropout: results.DropoutTable, channels: results.ChannelTable
) -> list[DropoutResultRow]:
    """Baseline, top-k, each random-k repeat with its channel set, bottom-k."""
    random_runs = zip(dropout.random_k, dropout.random_sets, strict=True)
    runs: list[tuple[DropoutCondition, int, results.ConditionMetrics, list[int]]] = [
        ("baseline", 0, dropout.baseline, []),
        ("top_k", 0, dropout.top_k, channels.top_k),
        *(("random_k", repeat, m, dropped) for repeat, (m, dropped) in enumerate(random_runs)),
        ("bottom_k", 0, dropout.bottom_k, channels.bottom_k),
    ]
    return [
        DropoutResultRow(
            condition=condition,
            repeat=repeat,
            k=len(dropped),
            channels=list(dropped),
            **results.metrics_dict(metrics),
        )
        for condition, repeat, metrics, dropped in runs
    ]


def probe_rows(probe: results.ProbeResult) -> list[ProbeResultRow]:
    """The probed and the neutral variant of one probe."""
    variants: list[tuple[ProbeVariant, results.ConditionMetrics]] = [
        ("probed", probe.probed),
        ("neutral", probe.neutral),
    ]
    return [
        ProbeResultRow(
            probe=probe.name,
            variant=variant,
            accuracy=metrics.accuracy,
            average_precision=metrics.average_precision,
            flip_rate=metrics.flip_rate,
            logit_drop=metrics.logit_drop,
            margin_drop=metrics.margin_drop,
            perturbation_norm=probe.perturbation_norm,
            top_k_activation_drop=probe.top_k_activation_drop,
            random_k_activation_drops=list(probe.random_k_activation_drops),
        )
        for variant, metrics in variants
    ]


def finding_rows(result: results.AuditResult) -> list[FindingRow]:
    """One row per finding, in the audit's order (verdict by verdict), each supporting finding
    linked to the row of the finding whose verdict it supports."""
    rows = [
        FindingRow(
            kind=f.kind,
            severity=f.severity,
            title=f.title,
            probe=f.probe,
            evidence=f.evidence.model_dump(mode="json"),
            fingerprint=finding_fingerprint(f, result.model.name, result.channels.layer),
            explanation=None if f.explanation is None else f.explanation.model_dump(mode="json"),
        )
        for f in result.findings
    ]
    for row, f in zip(rows, result.findings, strict=True):
        if f.supports is not None:
            row.supports = rows[f.supports]
    return rows


def artefact_rows(
    artefacts: Sequence[results.ArtefactRef], findings: list[FindingRow]
) -> list[ArtefactRow]:
    """One row per artefact, linked to the finding at its index in `AuditResult.findings`."""
    return [
        ArtefactRow(
            kind=a.kind,
            uri=a.uri,
            finding=None if a.finding is None else findings[a.finding],
        )
        for a in artefacts
    ]


def cluster_rows(clusters: Sequence[results.ClusterSummary]) -> list[ClusterRow]:
    """Clusters with their share `size / sum of sizes`."""
    total = sum(c.size for c in clusters)
    return [
        ClusterRow(
            cluster=c.cluster,
            size=c.size,
            share=c.size / total,
            relevance_profile=list(c.relevance_profile),
            evidence=c.evidence,
        )
        for c in clusters
    ]


def bootstrap_row(bootstrap: results.RelevanceBootstrap) -> RelevanceBootstrapRow:
    means = np.ascontiguousarray(bootstrap.means, dtype=BOOTSTRAP_DTYPE)
    return RelevanceBootstrapRow(
        n_samples=bootstrap.n_samples,
        n_replicates=means.shape[0],
        n_channels=means.shape[1],
        seed=bootstrap.seed,
        means=means.tobytes(),
    )


def bootstrap_means(row: RelevanceBootstrapRow) -> np.ndarray:
    """The `n_replicates x n_channels` float32 matrix of a stored bootstrap."""
    flat = np.frombuffer(row.means, dtype=BOOTSTRAP_DTYPE)
    return flat.reshape(row.n_replicates, row.n_channels)


def drift_rows(drift: results.DriftReport) -> list[DriftStatRow]:
    return [
        DriftStatRow(
            name=s.name,
            baseline_audit_id=drift.baseline_audit_id,
            value=s.value,
            lower=s.interval[0],
            upper=s.interval[1],
            threshold=s.threshold,
            bound=s.bound,
            drifted=s.drifted,
        )
        for s in drift.statistics
    ]
