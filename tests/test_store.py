"""The findings store against real databases: a SQLite file and a PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.orm import Session

from auditor.errors import StoreError
from auditor.results import (
    AuditResult,
    ChannelTable,
    ConditionMetrics,
    DropoutTable,
    Finding,
    ModelRef,
    ProbeResult,
)
from auditor.store import (
    AuditStore,
    ChannelStatRow,
    DropoutResultRow,
    FindingRow,
    ProbeResultRow,
    RegisteredModelRow,
    current,
    head,
    repository,
    upgrade,
)
from auditor.store.migrate import alembic_config
from auditor.store.schema import Base

PG_HOST = "127.0.0.1:5432"
N_CHANNELS = 16
TOP_K = [15, 11, 3]
BOTTOM_K = [0, 1, 2]
RANDOM_SETS = [[4, 9, 12], [5, 6, 13], [1, 7, 14], [0, 8, 10], [2, 3, 9]]


def metrics(flip_rate: float, accuracy: float | None = 0.9) -> ConditionMetrics:
    return ConditionMetrics(
        accuracy=accuracy,
        average_precision=None if accuracy is None else accuracy - 0.05,
        flip_rate=flip_rate,
        logit_drop=2 * flip_rate,
        n_samples=200,
        n_labelled=120,
    )


def make_result(model_name: str = "skin-lesion-cnn", finding_channels: list[int] = TOP_K):
    """A realistic audit: 16 channels at layer4, k=3, 5 random repeats, a grayscale probe."""
    relevance = [0.01 + 0.001 * c for c in range(N_CHANNELS)]  # bottom-k: 0, 1, 2
    relevance[15], relevance[11], relevance[3] = 0.3, 0.2, 0.1
    return AuditResult(
        model=ModelRef(
            uri=f"models:/{model_name}@champion",
            name=model_name,
            version="3",
            flavor="pytorch",
            run_id="0123456789abcdef",
        ),
        n_samples=200,
        n_labelled=120,
        sample_sets={"production": 200},
        channels=ChannelTable(
            layer="layer4", method="lrp", relevance=relevance, top_k=TOP_K, bottom_k=BOTTOM_K
        ),
        dropout=DropoutTable(
            k=3,
            baseline=metrics(0.0),
            top_k=metrics(0.45, accuracy=0.55),
            random_k=[metrics(0.02 * (i + 1)) for i in range(len(RANDOM_SETS))],
            bottom_k=metrics(0.01),
            random_sets=RANDOM_SETS,
        ),
        probes=[
            ProbeResult(
                name="grayscale",
                probed=metrics(0.4, accuracy=0.6),
                neutral=metrics(0.03),
                perturbation_norm=12.5,
                top_k_activation_drop=0.7,
                random_k_activation_drops=[0.1, 0.12, 0.08, 0.11, 0.09],
            )
        ],
        findings=[
            Finding(
                kind="spurious_channels",
                severity="high",
                title="top-3 channels at layer4 carry the decision",
                evidence={"channels": finding_channels, "dropout_effect": 0.39},
            ),
            Finding(
                kind="probe_sensitivity",
                severity="medium",
                title="predictions depend on colour",
                evidence={"excess_flip": 0.37, "channels": finding_channels},
                probe="grayscale",
            ),
        ],
        timings={"relevance": 1.5, "dropout": 0.75},
    )


@pytest.fixture
def audit_result() -> AuditResult:
    return make_result()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'not-yet' / 'auditor.db'}"


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    """A fresh database on the local server, dropped afterwards."""
    try:
        admin = psycopg.connect(
            f"postgresql://postgres@{PG_HOST}/postgres", autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL not reachable on {PG_HOST}: {' '.join(str(err).split())}")
    name = f"auditor_test_{uuid.uuid4().hex}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield f"postgresql+psycopg://postgres@{PG_HOST}/{name}"
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(db_url: str) -> Iterator[AuditStore]:
    upgrade(db_url)
    audit_store = AuditStore(db_url, auto_upgrade=False)
    yield audit_store
    audit_store.close()


def start(store: AuditStore) -> int:
    return store.start_audit(
        model_uri="models:/skin-lesion-cnn@champion",
        config_yaml="model:\n  uri: models:/skin-lesion-cnn@champion\n",
        config_hash="a" * 64,
        code_version="0.1.0",
    )


def count(engine: Engine, row: type[Base], audit_id: int) -> int:
    with Session(engine) as session:
        query = select(func.count()).select_from(row).where(row.audit_id == audit_id)
        return session.scalar(query)


def test_migrations_create_the_orm_schema(db_url: str) -> None:
    assert current(db_url) is None
    upgrade(db_url)
    assert current(db_url) == head() == "0001"
    engine = create_engine(db_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
    command.downgrade(alembic_config(db_url), "base")
    assert current(db_url) is None


def test_sqlite_store_upgrades_itself(sqlite_url: str) -> None:
    AuditStore(sqlite_url).close()
    assert current(sqlite_url) == head()


def test_round_trip(store: AuditStore, audit_result: AuditResult) -> None:
    audit_id = start(store)
    assert store.get_audit(audit_id).status == "running"
    store.finish_audit(audit_id, audit_result, report_path="reports/1.json")

    audit = store.get_audit(audit_id)  # detached: every relationship must be loaded
    assert (audit.status, audit.layer, audit.report_path) == (
        "succeeded",
        "layer4",
        "reports/1.json",
    )
    assert (audit.n_samples, audit.n_labelled, audit.error) == (200, 120, None)
    assert audit.timings == {"relevance": 1.5, "dropout": 0.75}
    assert audit.started_at.utcoffset() == timedelta(0)
    assert audit.started_at <= audit.finished_at
    assert audit.model_version is not None
    assert audit.model_version.model.name == "skin-lesion-cnn"
    assert (audit.model_version.version, audit.model_version.flavor) == ("3", "pytorch")
    assert audit.model_version.run_id == "0123456789abcdef"

    stats = {s.channel: s for s in audit.channel_stats}
    assert sorted(stats) == list(range(N_CHANNELS))
    assert [stats[c].rank for c in TOP_K] == [1, 2, 3]
    assert stats[15].relevance == pytest.approx(0.3)
    assert {c for c, s in stats.items() if s.in_top_k} == set(TOP_K)
    assert {c for c, s in stats.items() if s.in_bottom_k} == set(BOTTOM_K)

    dropout = {(d.condition, d.repeat): d for d in audit.dropout_results}
    assert sorted(dropout) == sorted(
        [("baseline", 0), ("top_k", 0), ("bottom_k", 0)] + [("random_k", i) for i in range(5)]
    )
    assert (dropout["baseline", 0].k, dropout["baseline", 0].channels) == (0, [])
    assert dropout["top_k", 0].channels == TOP_K
    assert dropout["top_k", 0].flip_rate == pytest.approx(0.45)
    assert dropout["bottom_k", 0].channels == BOTTOM_K
    assert [dropout["random_k", i].channels for i in range(5)] == RANDOM_SETS
    assert dropout["random_k", 4].flip_rate == pytest.approx(0.1)
    assert all(d.k == 3 and d.n_labelled == 120 for c, d in dropout.items() if c[0] != "baseline")

    probes = {p.variant: p for p in audit.probe_results}
    assert sorted(probes) == ["neutral", "probed"]
    assert probes["probed"].probe == "grayscale"
    assert probes["probed"].flip_rate == pytest.approx(0.4)
    assert probes["neutral"].accuracy == pytest.approx(0.9)
    assert probes["neutral"].random_k_activation_drops == [0.1, 0.12, 0.08, 0.11, 0.09]

    assert [f.kind for f in audit.findings] == ["spurious_channels", "probe_sensitivity"]
    assert audit.findings[1].evidence == {"excess_flip": 0.37, "channels": TOP_K}
    assert all(len(f.fingerprint) == 64 for f in audit.findings)
    assert [f.id for f in store.findings(audit_id)] == [f.id for f in audit.findings]
    assert [a.id for a in store.list_audits()] == [audit_id]


def test_fingerprints_are_stable_across_audits(store: AuditStore) -> None:
    first, second, other = start(store), start(store), start(store)
    store.finish_audit(first, make_result())
    store.finish_audit(second, make_result(finding_channels=list(reversed(TOP_K))))
    store.finish_audit(other, make_result(model_name="another-model"))

    def prints(audit_id: int) -> list[str]:
        return [f.fingerprint for f in store.findings(audit_id)]

    assert prints(first) == prints(second)
    assert len(set(prints(first))) == 2
    assert set(prints(first)).isdisjoint(prints(other))
    audits = {a.id: a for a in store.list_audits()}
    assert audits[first].model_version_id == audits[second].model_version_id
    assert audits[first].model_version_id != audits[other].model_version_id
    assert [a.id for a in store.list_audits(limit=2)] == [other, second]


def test_local_model_without_version_is_keyed_by_uri(
    store: AuditStore, audit_result: AuditResult
) -> None:
    audit_id = start(store)
    local = ModelRef(uri="/models/cnn.pt", name="cnn", version=None, flavor="pytorch")
    store.finish_audit(audit_id, replace(audit_result, model=local))
    version = store.get_audit(audit_id).model_version
    assert version is not None
    assert (version.model.name, version.version, version.run_id) == ("cnn", "/models/cnn.pt", None)


def test_failure_inside_finish_writes_nothing(
    store: AuditStore, audit_result: AuditResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit_id = start(store)
    flushed: list[int] = []

    def count_flushed(session: Session, _context: object) -> None:
        query = select(func.count()).where(ChannelStatRow.audit_id == audit_id)
        flushed.append(session.scalar(query))

    def broken_fingerprint(*_args: object) -> str:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(repository, "finding_fingerprint", broken_fingerprint)
    event.listen(Session, "after_flush", count_flushed)
    try:
        with pytest.raises(RuntimeError, match="injected failure"):
            store.finish_audit(audit_id, audit_result)
    finally:
        event.remove(Session, "after_flush", count_flushed)

    assert max(flushed) == N_CHANNELS  # the rows had reached the database before the failure
    for row in (ChannelStatRow, DropoutResultRow, ProbeResultRow, FindingRow):
        assert count(store.engine, row, audit_id) == 0
    with Session(store.engine) as session:
        assert session.scalar(select(func.count()).select_from(RegisteredModelRow)) == 0
    audit = store.get_audit(audit_id)
    assert (audit.status, audit.model_version_id, audit.finished_at) == ("running", None, None)

    store.fail_audit(audit_id, "RuntimeError: injected failure")
    audit = store.get_audit(audit_id)
    assert (audit.status, audit.error) == ("failed", "RuntimeError: injected failure")
    assert audit.finished_at is not None


def test_an_audit_finishes_only_once(store: AuditStore, audit_result: AuditResult) -> None:
    audit_id = start(store)
    store.finish_audit(audit_id, audit_result)
    with pytest.raises(StoreError, match=f"audit {audit_id} .* is already succeeded"):
        store.finish_audit(audit_id, audit_result)
    with pytest.raises(StoreError, match="does not exist"):
        store.fail_audit(audit_id + 100, "boom")
    with pytest.raises(StoreError, match="does not exist"):
        store.get_audit(audit_id + 100)


def test_mark_stale_running_as_failed(store: AuditStore, audit_result: AuditResult) -> None:
    crashed, finished = start(store), start(store)
    store.finish_audit(finished, audit_result)
    assert store.mark_stale_running_as_failed() == 1
    assert store.mark_stale_running_as_failed() == 0
    audit = store.get_audit(crashed)
    assert audit.status == "failed"
    assert audit.error == "interrupted: the auditor process ended before the audit finished"
    assert store.get_audit(finished).status == "succeeded"


def test_unreachable_database_is_one_line_store_error() -> None:
    with pytest.raises(StoreError) as caught:
        AuditStore("postgresql+psycopg://auditor:s3cret@127.0.0.1:1/audits")
    message = str(caught.value)
    assert "\n" not in message
    assert (
        "cannot connect to database postgresql+psycopg://auditor:***@127.0.0.1:1/audits" in message
    )
    assert "s3cret" not in message
    assert message.endswith("fix: start the server or set store_url / AUDITOR_DB_URL")


def test_schema_behind_head_needs_db_upgrade(db_url: str) -> None:
    expected = (
        r"schema revision \(empty\), this auditor needs 0001 -- fix: run `auditor db upgrade`"
    )
    with pytest.raises(StoreError, match=expected):
        AuditStore(db_url, auto_upgrade=False)
    if db_url.startswith("postgresql"):  # a server database is never upgraded implicitly
        with pytest.raises(StoreError, match=expected):
            AuditStore(db_url)
