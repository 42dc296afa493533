"""The findings store against real databases: a SQLite file and a PostgreSQL server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql
from sqlalchemy import (
    JSON,
    Engine,
    column,
    create_engine,
    event,
    func,
    insert,
    select,
    table,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from auditor.errors import ConfigError, StoreError
from auditor.evidence import CueExplanation
from auditor.results import (
    ArtefactRef,
    AuditResult,
    ChannelTable,
    ClusterSummary,
    ConditionMetrics,
    DriftReport,
    DriftStatistic,
    DropoutTable,
    Finding,
    ModelRef,
    ProbeResult,
    RelevanceBootstrap,
)
from auditor.store import (
    ArtefactRow,
    AuditRow,
    AuditStore,
    ChannelStatRow,
    ClusterRow,
    DriftStatRow,
    DropoutResultRow,
    FindingRow,
    ProbeResultRow,
    RelevanceBootstrapRow,
    current,
    finding_fingerprint,
    head,
    liveness,
    upgrade,
)
from auditor.store.migrate import alembic_config, sqlite_path
from auditor.store.rows import bootstrap_means
from auditor.store.schema import Base, UTCDateTime, utcnow

from .evidence_examples import EXAMPLES, example_evidence

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
        margin_drop=3 * flip_rate,
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
                evidence=example_evidence("spurious_channels", channels=finding_channels),
            ),
            Finding(
                kind="probe_sensitivity",
                severity="medium",
                title="predictions depend on colour",
                evidence=example_evidence("probe_sensitivity"),
                probe="grayscale",
            ),
        ],
        timings={"relevance": 1.5, "dropout": 0.75},
    )


CLUSTERS = [
    ClusterSummary(cluster=0, size=150, relevance_profile=[0.1] * N_CHANNELS),
    ClusterSummary(
        cluster=1, size=50, relevance_profile=[0.3] * N_CHANNELS, evidence={"flip_rate": 0.6}
    ),
]


def make_bootstrap(seed: int = 0, n_replicates: int = 50) -> RelevanceBootstrap:
    rng = np.random.default_rng(seed)
    means = rng.uniform(0, 0.3, size=(n_replicates, N_CHANNELS)).astype(np.float32)
    return RelevanceBootstrap(means=means, n_samples=200, seed=seed)


def make_drift(baseline_audit_id: int | None) -> DriftReport:
    """A drift report against `baseline_audit_id` (None: no baseline, no statistics)."""
    statistics = [
        DriftStatistic("spearman", 0.42, (0.9, 1.0), 0.8, "min"),
        DriftStatistic("js_distance", 0.02, (0.0, 0.05), 0.1, "max"),
    ]
    if baseline_audit_id is None:
        return DriftReport(make_bootstrap(), None, [], [], note="no earlier audit")
    return DriftReport(make_bootstrap(), baseline_audit_id, statistics, [])


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
    audit_store = AuditStore(db_url, create=False)
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
    assert current(db_url) == head() == "0005"
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
    assert dropout["top_k", 0].margin_drop == pytest.approx(1.35)
    assert all(d.k == 3 and d.n_labelled == 120 for c, d in dropout.items() if c[0] != "baseline")

    probes = {p.variant: p for p in audit.probe_results}
    assert sorted(probes) == ["neutral", "probed"]
    assert probes["probed"].probe == "grayscale"
    assert probes["probed"].flip_rate == pytest.approx(0.4)
    assert probes["probed"].margin_drop == pytest.approx(1.2)
    assert probes["neutral"].accuracy == pytest.approx(0.9)
    assert probes["neutral"].random_k_activation_drops == [0.1, 0.12, 0.08, 0.11, 0.09]

    assert [f.kind for f in audit.findings] == ["spurious_channels", "probe_sensitivity"]
    assert audit.findings[1].evidence == EXAMPLES["probe_sensitivity"]
    assert [f.typed_evidence for f in audit.findings] == [f.evidence for f in audit_result.findings]
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


#: fingerprints of the example findings as the store computed them before evidence was typed:
#: stored review verdicts carry over to new audits by these values
PINNED_FINGERPRINTS = {
    "probe_sensitivity": "4ee46695bf63f0ac44f3130e8c3b55429c9ba78701fbf2078bfedd1026ad91d9",
    "spurious_channels": "5967ae604c601b81ab196b9d349588a2ac5c933d3032a1cc760af877f42cd37a",
    "explanation_drift": "2c17f166d9cc231159e08d61ba77b1e5611427f7e41f664f267851d695c2ce6d",
    "unlabeled_subclass": "ccaffbfc2411cabec4d3c1be24d43ae8565d17e93fe724f57644c2c7c2cebcc9",
}
PROBES = {"probe_sensitivity": "grayscale", "spurious_channels": "grayscale"}


@pytest.mark.parametrize("kind", sorted(PINNED_FINGERPRINTS))
def test_fingerprints_are_those_of_untyped_evidence(kind: str) -> None:
    finding = Finding(kind, "high", "t", example_evidence(kind), PROBES.get(kind))
    fingerprint = finding_fingerprint(finding, "counterfeit-detector", "layer4")
    assert fingerprint == PINNED_FINGERPRINTS[kind]
    if kind == "spurious_channels":  # the channel set, in any order
        reordered = replace(finding, evidence=example_evidence(kind, channels=[3, 15, 11]))
        assert finding_fingerprint(reordered, "counterfeit-detector", "layer4") == fingerprint


def test_fingerprints_tell_classes_and_statistics_apart() -> None:
    spurious = make_result().findings[0]
    per_class = [
        replace(spurious, evidence=spurious.evidence.model_copy(update={"class_index": c}))
        for c in (0, 2)  # the example's class is 1
    ]

    def drift_finding(statistic: str, value: float) -> Finding:
        evidence = example_evidence("explanation_drift", statistic=statistic, value=value)
        return Finding("explanation_drift", "medium", "t", evidence)

    drift = [
        drift_finding(s, v) for s, v in (("spearman", 0.4), ("js_distance", 0.3), ("spearman", 0.2))
    ]
    prints = [finding_fingerprint(f, "cnn", "layer4") for f in [spurious, *per_class, *drift]]
    assert len(set(prints[:5])) == 5
    assert prints[5] == prints[3]  # the same statistic again, whatever its value


def test_local_model_without_version_is_keyed_by_uri(
    store: AuditStore, audit_result: AuditResult
) -> None:
    audit_id = start(store)
    local = ModelRef(uri="/models/cnn.pt", name="cnn", version=None, flavor="pytorch")
    store.finish_audit(audit_id, replace(audit_result, model=local))
    version = store.get_audit(audit_id).model_version
    assert version is not None
    assert (version.model.name, version.version, version.run_id) == ("cnn", "/models/cnn.pt", None)


def test_failure_inside_finish_writes_nothing(store: AuditStore, audit_result: AuditResult) -> None:
    baseline = start(store)
    store.finish_audit(baseline, audit_result, drift=make_drift(None))
    audit_id = start(store)
    flushed: list[tuple[int, int]] = []

    def fail_once_written(session: Session, _context: object) -> None:
        """Count what reached the database, then fail before the commit."""
        counts = tuple(
            session.scalar(select(func.count()).where(row.audit_id == audit_id))
            for row in (ChannelStatRow, DriftStatRow, ArtefactRow)
        )
        flushed.append(counts)
        if all(counts):
            raise RuntimeError("injected failure")

    event.listen(Session, "after_flush", fail_once_written)
    try:
        with pytest.raises(RuntimeError, match="injected failure"):
            store.finish_audit(
                audit_id,
                audit_result,
                drift=make_drift(baseline),
                clusters=CLUSTERS,
                artefacts=[ArtefactRef("gallery", "/artefacts/1/gallery", finding=0)],
            )
    finally:
        event.remove(Session, "after_flush", fail_once_written)

    assert flushed[-1] == (N_CHANNELS, 2, 1)  # every row had reached the database
    for row in (
        ChannelStatRow,
        DropoutResultRow,
        ProbeResultRow,
        FindingRow,
        ClusterRow,
        RelevanceBootstrapRow,
        DriftStatRow,
        ArtefactRow,
    ):
        assert count(store.engine, row, audit_id) == 0
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


def test_cancel_audit_records_a_running_audit_as_cancelled(
    store: AuditStore, audit_result: AuditResult
) -> None:
    audit_id = start(store)
    store.cancel_audit(audit_id, "cancelled: terminated (SIGTERM) before the audit finished")
    audit = store.get_audit(audit_id)
    assert (audit.status, audit.error) == (
        "cancelled",
        "cancelled: terminated (SIGTERM) before the audit finished",
    )
    assert audit.finished_at is not None and audit.model_version_id is None
    assert not (audit.channel_stats or audit.findings or audit.artefacts)
    assert liveness.owner_gone(audit_id, liveness.HOST, os.getpid())  # no longer ours to run
    with pytest.raises(StoreError, match=f"audit {audit_id} .* is already cancelled"):
        store.cancel_audit(audit_id, "again")
    with pytest.raises(StoreError, match=f"audit {audit_id} .* is already cancelled"):
        store.finish_audit(audit_id, audit_result)
    assert store.mark_stale_running_as_failed(stale_after_s=0) == 0  # not running: left alone
    assert store.drift_baseline("skin-lesion-cnn", "layer4") is None  # never a baseline


def set_columns(store: AuditStore, audit_id: int, **values: object) -> None:
    with Session(store.engine) as session, session.begin():
        session.execute(update(AuditRow).where(AuditRow.id == audit_id).values(**values))


def dead_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_stale_audits_are_those_whose_owner_is_gone(
    store: AuditStore, audit_result: AuditResult
) -> None:
    silent_since = utcnow() - timedelta(seconds=601)
    running_here = start(store)
    finished = start(store)
    store.finish_audit(finished, audit_result)
    crashed_here = start(store)
    set_columns(store, crashed_here, owner_pid=dead_pid())
    forgotten = start(store)  # this pid, but not an audit this process runs (pid reused)
    liveness.unregister(forgotten)
    hung_here = start(store)
    set_columns(store, hung_here, heartbeat_at=silent_since)
    elsewhere = start(store)  # another host: only its heartbeat tells
    set_columns(store, elsewhere, owner_host="auditor-b", owner_pid=dead_pid())
    silent_elsewhere = start(store)
    set_columns(
        store, silent_elsewhere, owner_host="auditor-b", owner_pid=1, heartbeat_at=silent_since
    )

    assert store.mark_stale_running_as_failed(stale_after_s=600) == 4
    assert store.mark_stale_running_as_failed(stale_after_s=600) == 0
    audits = {a.id: a for a in store.list_audits()}
    gone = "interrupted: the auditor process ended before the audit finished"
    silent = "interrupted: no heartbeat for 600 s (the auditor process hung or ended)"
    assert {i: (audits[i].status, audits[i].error) for i in audits} == {
        running_here: ("running", None),
        finished: ("succeeded", None),
        crashed_here: ("failed", gone),
        forgotten: ("failed", gone),
        hung_here: ("failed", silent),
        elsewhere: ("running", None),
        silent_elsewhere: ("failed", silent),
    }
    assert audits[crashed_here].finished_at is not None


def test_heartbeat_keeps_a_running_audit_alive(
    store: AuditStore, audit_result: AuditResult
) -> None:
    audit_id = start(store)
    owner = store.get_audit(audit_id)
    assert (owner.owner_host, owner.owner_pid) == (socket.gethostname(), os.getpid())
    set_columns(store, audit_id, heartbeat_at=utcnow() - timedelta(hours=1))
    with store.keep_alive(audit_id, interval_s=0.05):
        deadline = time.monotonic() + 10
        while store.get_audit(audit_id).heartbeat_at < utcnow() - timedelta(minutes=1):
            assert time.monotonic() < deadline, "no heartbeat within 10 s"
            time.sleep(0.05)
        assert store.mark_stale_running_as_failed(stale_after_s=60) == 0
        store.finish_audit(audit_id, audit_result)
        assert store.beat(audit_id) is False  # the heartbeat stops once the audit ended
    assert store.get_audit(audit_id).status == "succeeded"


def test_zombie_processes_count_as_gone() -> None:
    process = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not liveness.process_alive(process.pid)  # exited, not yet reaped
    finally:
        process.wait()
    assert liveness.process_alive(os.getpid())
    assert not liveness.process_alive(process.pid)


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
        r"schema revision \(empty\), this auditor needs 0005 -- fix: run `auditor db upgrade`"
    )
    if (path := sqlite_path(db_url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()  # an empty SQLite database
    with pytest.raises(StoreError, match=expected):
        AuditStore(db_url, create=False)
    if db_url.startswith("postgresql"):  # a server database is never upgraded implicitly
        with pytest.raises(StoreError, match=expected):
            AuditStore(db_url)


def test_a_lookup_creates_no_database(tmp_path: Path) -> None:
    """`create=False` (the dashboard, `auditor neighbours`): a missing SQLite file is named as
    missing and neither it nor its folder is created."""
    url = f"sqlite:///{tmp_path}/absent/auditor.db"
    with pytest.raises(StoreError, match=r"absent/auditor.db does not exist -- fix: pass the"):
        AuditStore(url, create=False)
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_database_is_named_as_read_only(sqlite_url: str) -> None:
    """Writing to a read-only database names the permission, not the server or `db upgrade`."""
    upgrade(sqlite_url)
    read_only = f"sqlite:///file:{sqlite_path(sqlite_url)}?mode=ro&uri=true"
    store = AuditStore(read_only)
    try:
        with pytest.raises(StoreError) as raised:
            start(store)
    finally:
        store.close()
    message = str(raised.value)
    assert "readonly database" in message and "writable for this user" in message
    assert "db upgrade" not in message and "start the server" not in message


def test_operations_rows_round_trip(store: AuditStore, audit_result: AuditResult) -> None:
    baseline = start(store)
    store.finish_audit(baseline, audit_result, drift=make_drift(None))
    audit_id = start(store)
    store.finish_audit(
        audit_id,
        audit_result,
        report_path="reports/2.json",
        drift=make_drift(baseline),
        clusters=CLUSTERS,
        artefacts=[
            ArtefactRef("gallery", "/artefacts/2/spurious", finding=0),
            ArtefactRef("relevance", "mlflow-artifacts:/7/relevance.npy"),
        ],
    )

    audit = store.get_audit(audit_id)
    assert audit.bootstrap is not None
    assert (audit.bootstrap.n_samples, audit.bootstrap.n_replicates) == (200, 50)
    np.testing.assert_array_equal(bootstrap_means(audit.bootstrap), make_bootstrap().means)
    assert [(d.name, d.baseline_audit_id, d.drifted) for d in audit.drift_stats] == [
        ("js_distance", baseline, False),
        ("spearman", baseline, True),
    ]
    spearman = audit.drift_stats[1]
    assert (spearman.value, spearman.lower, spearman.upper) == pytest.approx((0.42, 0.9, 1.0))
    assert (spearman.threshold, spearman.bound) == (0.8, "min")
    assert [(c.cluster, c.size, c.share) for c in audit.clusters] == [(0, 150, 0.75), (1, 50, 0.25)]
    assert audit.clusters[1].evidence == {"flip_rate": 0.6}
    assert audit.clusters[1].relevance_profile == [0.3] * N_CHANNELS
    artefacts = [(a.kind, a.uri, a.finding_id, a.pruned_at) for a in audit.artefacts]
    assert artefacts == [
        ("report", str(Path("reports/2.json").absolute()), None, None),
        ("gallery", "/artefacts/2/spurious", audit.findings[0].id, None),
        ("relevance", "mlflow-artifacts:/7/relevance.npy", None, None),
    ]
    assert [a.kind for a in audit.findings[0].artefacts] == ["gallery"]
    assert [a.id for a in store.artefacts(audit_id)] == [a.id for a in audit.artefacts]
    assert store.get_audit(baseline).drift_stats == []  # its first audit: nothing to compare


def test_reviews_and_false_alarms(store: AuditStore, audit_result: AuditResult) -> None:
    first, second = start(store), start(store)
    store.finish_audit(first, audit_result)
    store.finish_audit(second, audit_result)
    spurious, probe = store.findings(first)
    later_spurious = store.findings(second)[0]

    review = store.add_review(spurious.id, "false_alarm", "dr. lee", "the tint is the label")
    assert review.id is not None and review.created_at is not None
    store.add_review(probe.id, "needs_data", "dr. lee")
    assert store.false_alarms([spurious.fingerprint, probe.fingerprint]) == {spurious.fingerprint}
    assert store.false_alarms([]) == set()

    # the newest review of any finding with the fingerprint counts
    store.add_review(later_spurious.id, "confirmed", "dr. kim", "tint is a shortcut after all")
    assert store.false_alarms([spurious.fingerprint]) == set()
    assert [(r.status, r.reviewer) for r in store.reviews(spurious.id)] == [
        ("false_alarm", "dr. lee")
    ]
    reviews = store.get_audit(second).findings[0].reviews
    assert [(r.status, r.comment) for r in reviews] == [
        ("confirmed", "tint is a shortcut after all")
    ]

    with pytest.raises(StoreError, match="review status 'wrong' is unknown -- fix: use one of"):
        store.add_review(spurious.id, "wrong", "dr. lee")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="finding 999 does not exist"):
        store.add_review(999, "confirmed", "dr. lee")
    with pytest.raises(StoreError, match="a review needs a reviewer"):
        store.add_review(spurious.id, "confirmed", " ")


def test_drift_baseline_and_previous_audit(store: AuditStore, audit_result: AuditResult) -> None:
    assert store.drift_baseline("skin-lesion-cnn", "layer4") is None
    first, other_model, other_layer, failed = start(store), start(store), start(store), start(store)
    store.finish_audit(first, audit_result)
    store.finish_audit(other_model, make_result(model_name="another-model"))
    layer3 = replace(audit_result.channels, layer="layer3")
    store.finish_audit(other_layer, replace(audit_result, channels=layer3))
    store.fail_audit(failed, "boom")
    second = start(store)
    store.finish_audit(second, audit_result)

    baseline = store.drift_baseline("skin-lesion-cnn", "layer4")
    assert baseline is not None and baseline.id == second
    assert len(baseline.channel_stats) == N_CHANNELS and len(baseline.probe_results) == 2
    assert store.drift_baseline("skin-lesion-cnn", "layer4", pinned=first).id == first
    assert store.previous_audit_id(second) == other_layer  # same model, any layer
    assert store.previous_audit_id(first) is None
    assert store.previous_audit_id(failed) is None

    for pinned, state in [
        (failed, "is a failed audit"),
        (other_model, "is a succeeded audit of model 'another-model'"),
        (other_layer, "at layer 'layer3'"),
        (999, "does not exist"),
    ]:
        with pytest.raises(ConfigError) as caught:
            store.drift_baseline("skin-lesion-cnn", "layer4", pinned=pinned)
        message = str(caught.value)
        assert message.startswith(f"drift.baseline_audit_id = {pinned}: that audit")
        assert state in message and message.endswith("or remove drift.baseline_audit_id")


def test_upgrade_from_0001_keeps_audits(db_url: str, audit_result: AuditResult) -> None:
    upgrade(db_url, "0001")
    legacy = table(
        "audits",
        *(column(name) for name in ("model_uri", "status", "config_yaml", "config_hash")),
        column("code_version"),
        column("started_at", UTCDateTime()),
    )
    engine = create_engine(db_url)
    with engine.begin() as connection:
        for status, age in [("succeeded", timedelta(0)), ("running", timedelta(hours=2))]:
            connection.execute(
                insert(legacy).values(
                    model_uri="models:/legacy@prod",
                    status=status,
                    config_yaml="{}",
                    config_hash="b" * 64,
                    code_version="0.0.9",
                    started_at=utcnow() - age,
                )
            )
    engine.dispose()

    upgrade(db_url)
    store = AuditStore(db_url, create=False)
    try:
        audits = store.list_audits()
        assert [(a.status, a.owner_host, a.heartbeat_at) for a in audits] == [
            ("succeeded", None, None),
            ("running", None, None),
        ]
        # without owner or heartbeat, a legacy running audit is stale once its start is old
        assert store.mark_stale_running_as_failed(stale_after_s=3 * 3600) == 0
        assert store.mark_stale_running_as_failed(stale_after_s=3600) == 1
        audit_id = start(store)
        store.finish_audit(audit_id, audit_result)
        assert store.get_audit(audit_id).status == "succeeded"
    finally:
        store.close()


def test_upgrade_from_0002_keeps_audits_and_accepts_cancelled(db_url: str) -> None:
    """0003 rebuilds the audits table on SQLite (batch mode): the rows, and the rows of its
    child tables (foreign keys with ON DELETE CASCADE), survive; the new status is accepted,
    unknown ones still rejected; a downgrade records cancelled audits as failed."""
    upgrade(db_url, "0002")
    audits = table(
        "audits",
        *(column(name) for name in ("id", "model_uri", "status", "config_yaml", "config_hash")),
        column("code_version"),
        column("started_at", UTCDateTime()),
        column("error"),
    )
    findings = table(
        "findings",
        *(column(name) for name in ("audit_id", "kind", "severity", "title", "fingerprint")),
        column("evidence", JSON()),
        column("created_at", UTCDateTime()),
    )

    def audit_row(audit_id: int, status: str) -> dict[str, object]:
        return {
            "id": audit_id,
            "model_uri": "models:/legacy@prod",
            "status": status,
            "config_yaml": "{}",
            "config_hash": "c" * 64,
            "code_version": "0.1.0",
            "started_at": utcnow() - timedelta(minutes=10 - audit_id),
            "error": "boom" if status == "failed" else None,
        }

    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            for audit_id, status in [(1, "succeeded"), (2, "failed"), (3, "running")]:
                connection.execute(insert(audits).values(audit_row(audit_id, status)))
            connection.execute(
                insert(findings).values(
                    audit_id=1, kind="probe_sensitivity", severity="high", title="colour",
                    fingerprint="f" * 64, evidence={"excess_flip": 0.4}, created_at=utcnow(),
                )
            )  # fmt: skip
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(audits).values(audit_row(4, "cancelled")))

        upgrade(db_url)
        store = AuditStore(db_url, create=False)
        try:
            assert [(a.id, a.status) for a in store.list_audits()] == [
                (3, "running"),
                (2, "failed"),
                (1, "succeeded"),
            ]
            assert store.get_audit(2).error == "boom"
            assert [f.title for f in store.findings(1)] == ["colour"]  # no cascade fired
            store.cancel_audit(3, "cancelled: interrupted (SIGINT, Ctrl-C)")
            assert store.get_audit(3).status == "cancelled"
        finally:
            store.close()
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(audits).values(audit_row(4, "paused")))

        command.downgrade(alembic_config(db_url), "0002")
        with engine.connect() as connection:
            rows = connection.execute(select(audits.c.id, audits.c.status, audits.c.error))
            assert sorted(rows) == [
                (1, "succeeded", None),
                (2, "failed", "boom"),
                (3, "failed", "cancelled: interrupted (SIGINT, Ctrl-C)"),
            ]
    finally:
        engine.dispose()


def test_recovery_removes_the_folders_of_dead_audits_only(store: AuditStore, tmp_path: Path) -> None:
    """A failed audit keeps no files: the recovery that marks a dead audit as failed removes
    the folders it recorded; those of a live audit stay."""

    def folders(name: str) -> list[Path]:
        made = [tmp_path / name / "audit-artifacts", tmp_path / name / "scratch"]
        for folder in made:
            (folder / "inside").mkdir(parents=True)
        return made

    crashed, alive = start(store), start(store)
    crashed_dirs, alive_dirs = folders("crashed"), folders("alive")
    store.record_work_dirs(crashed, crashed_dirs)
    store.record_work_dirs(alive, alive_dirs)
    set_columns(store, crashed, owner_pid=dead_pid())

    assert store.mark_stale_running_as_failed(stale_after_s=600) == 1
    assert store.get_audit(crashed).status == "failed"
    assert not any(folder.exists() for folder in crashed_dirs)
    assert store.get_audit(alive).status == "running"
    assert all(folder.is_dir() for folder in alive_dirs)


def test_upgrade_from_0003_keeps_audits_and_records_work_dirs(db_url: str, tmp_path: Path) -> None:
    """0004 adds `audits.work_dirs`: audits stored before it have none, and are recovered as
    before; a downgrade drops the column and keeps the rows."""
    upgrade(db_url, "0003")
    audits = table(
        "audits",
        *(column(name) for name in ("id", "model_uri", "status", "config_yaml", "config_hash")),
        column("code_version"),
        column("started_at", UTCDateTime()),
        column("owner_host"),
        column("owner_pid"),
    )
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            legacy = connection.execute(
                insert(audits).values(
                    model_uri="models:/legacy@prod", status="running", config_yaml="{}",
                    config_hash="c" * 64, code_version="0.1.0", started_at=utcnow(),
                    owner_host=socket.gethostname(), owner_pid=dead_pid(),
                ).returning(audits.c.id)
            ).scalar_one()  # fmt: skip
        upgrade(db_url)
        store = AuditStore(db_url, create=False)
        try:
            assert store.get_audit(legacy).work_dirs is None
            new = start(store)
            store.record_work_dirs(new, [tmp_path / "scratch"])
            assert store.get_audit(new).work_dirs == [str(tmp_path / "scratch")]
            assert store.mark_stale_running_as_failed(stale_after_s=600) == 1
            assert store.get_audit(legacy).status == "failed"
        finally:
            store.close()
        command.downgrade(alembic_config(db_url), "0003")
        with engine.connect() as connection:
            rows = connection.execute(select(audits.c.id, audits.c.status))
            assert sorted(rows) == [(legacy, "failed"), (new, "running")]
    finally:
        engine.dispose()


def test_a_verdict_is_stored_with_its_support_and_explanation(store: AuditStore) -> None:
    """0005: a supporting finding points at the finding heading its verdict, with the test
    that explains it; deleting the audit removes both."""
    result = make_result()
    explanation = CueExplanation(
        explained_by="patch_occlusion(cell=0)", flip_rate=0.49, occluded_flip_rate=0.0,
        neutral_flip_rate=0.0, vanished=39, appeared=0, p_value=1.8e-12, remaining_excess=0.0,
        excess_threshold=0.2, alpha=0.01, explained=True,
    )  # fmt: skip
    result.findings[1] = replace(result.findings[1], supports=0, explanation=explanation)
    audit_id = start(store)
    store.finish_audit(audit_id, result)

    head, support = store.findings(audit_id)
    assert head.supports_id is None and head.explanation is None
    assert support.supports_id == head.id
    assert CueExplanation.model_validate(support.explanation) == explanation


def test_upgrade_from_0004_keeps_findings_as_their_own_verdicts(sqlite_url: str) -> None:
    upgrade(sqlite_url, "0004")
    engine = create_engine(sqlite_url)
    audits = table("audits", column("id"), column("model_uri"), column("status"),
                   column("config_yaml"), column("config_hash"), column("code_version"),
                   column("started_at", UTCDateTime()))  # fmt: skip
    findings = table("findings", column("id"), column("audit_id"), column("kind"),
                     column("severity"), column("title"), column("evidence"),
                     column("fingerprint"), column("created_at", UTCDateTime()))  # fmt: skip
    try:
        with engine.begin() as connection:
            audit_id = connection.execute(insert(audits).values(
                model_uri="models:/m@prod", status="succeeded", config_yaml="{}",
                config_hash="c" * 64, code_version="0.1.0", started_at=utcnow(),
            ).returning(audits.c.id)).scalar_one()  # fmt: skip
            connection.execute(insert(findings).values(
                audit_id=audit_id, kind="probe_sensitivity", severity="high", title="old",
                evidence=json.dumps(EXAMPLES["probe_sensitivity"]), fingerprint="f" * 64,
                created_at=utcnow(),
            ))  # fmt: skip
        upgrade(sqlite_url)
        store = AuditStore(sqlite_url, create=False)
        try:
            (old,) = store.findings(audit_id)
            assert (old.title, old.supports_id, old.explanation) == ("old", None, None)
        finally:
            store.close()
        command.downgrade(alembic_config(sqlite_url), "0004")
        with engine.connect() as connection:
            assert connection.execute(select(findings.c.title)).scalars().all() == ["old"]
    finally:
        engine.dispose()
