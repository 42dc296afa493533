"""Several auditor PROCESSES on one database (a SQLite file, the PostgreSQL server): concurrent
audits do not corrupt each other, an alert is claimed once, a process killed in the middle of
its audit's transaction leaves no rows and its audit is marked failed by the next auditor."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from auditor.alerts import ledger
from auditor.results import ArtefactRef
from auditor.store import (
    AuditStore,
    ChannelStatRow,
    ClusterRow,
    DropoutResultRow,
    FindingRow,
    ModelVersionRow,
    ProbeResultRow,
    RegisteredModelRow,
    RelevanceBootstrapRow,
    current,
    head,
    upgrade,
)
from auditor.store.schema import utcnow

from . import test_store
from .test_store import CLUSTERS, N_CHANNELS, count, make_drift, make_result, start

sqlite_url, postgresql_url = test_store.sqlite_url, test_store.postgresql_url
db_url = test_store.db_url

WORKERS = 3
AUDITS_PER_WORKER = 4
SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter: a separate auditor process
JOIN_TIMEOUT_S = 120


def _write_audits(url: str, barrier: Barrier, worker: int, results: multiprocessing.Queue) -> None:
    """One auditor: audits of the same model, each with heartbeats while it is written."""
    store = AuditStore(url, create=False)
    barrier.wait()
    for n in range(AUDITS_PER_WORKER):
        audit_id = start(store)
        with store.keep_alive(audit_id, interval_s=0.01):
            store.finish_audit(
                audit_id,
                make_result(),
                report_path=f"/reports/{worker}-{n}.json",
                drift=make_drift(None),
                clusters=CLUSTERS,
                artefacts=[ArtefactRef("gallery", f"/artefacts/{worker}-{n}", finding=1)],
            )
        results.put(audit_id)
    store.close()


def _claim_alerts(
    url: str, barrier: Barrier, keys: list[str], results: multiprocessing.Queue
) -> None:
    store = AuditStore(url, create=False)
    now = utcnow()
    barrier.wait()
    for key in keys:
        results.put((key, ledger.claim(store, key, cooldown_s=3600, now=now)))
    store.close()


def _open_new_sqlite(url: str, barrier: Barrier) -> None:
    barrier.wait()
    AuditStore(url).close()  # every process finds the file unmigrated and upgrades it


def _hang_in_finish(url: str, written: Event) -> None:
    """Start an audit and stop for good once its results are written but not committed."""
    store = AuditStore(url, create=False)
    audit_id = start(store)

    def hang(_session: Session, _context: object) -> None:
        written.set()
        time.sleep(600)

    event.listen(Session, "after_flush", hang)
    store.finish_audit(audit_id, make_result(), drift=make_drift(None), clusters=CLUSTERS)


def run_processes(target: object, args: list[tuple]) -> None:
    processes = [SPAWN.Process(target=target, args=a) for a in args]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_TIMEOUT_S)
        assert process.exitcode == 0, f"auditor process ended with {process.exitcode}"


def drain(queue: multiprocessing.Queue, n: int) -> list:
    return [queue.get(timeout=JOIN_TIMEOUT_S) for _ in range(n)]


def test_concurrent_auditors_write_whole_audits(db_url: str) -> None:
    upgrade(db_url)
    barrier, results = SPAWN.Barrier(WORKERS), SPAWN.Queue()
    run_processes(_write_audits, [(db_url, barrier, w, results) for w in range(WORKERS)])
    audit_ids = drain(results, WORKERS * AUDITS_PER_WORKER)

    store = AuditStore(db_url, create=False)
    try:
        assert len(set(audit_ids)) == WORKERS * AUDITS_PER_WORKER
        audits = store.list_audits(limit=100)
        assert sorted(a.id for a in audits) == sorted(audit_ids)
        assert {a.status for a in audits} == {"succeeded"}
        for audit_id in audit_ids:
            assert count(store.engine, ChannelStatRow, audit_id) == N_CHANNELS
            assert count(store.engine, DropoutResultRow, audit_id) == 8
            assert count(store.engine, ProbeResultRow, audit_id) == 2
            assert count(store.engine, FindingRow, audit_id) == 2
            assert count(store.engine, ClusterRow, audit_id) == 2
            assert count(store.engine, RelevanceBootstrapRow, audit_id) == 1
            assert [a.kind for a in store.artefacts(audit_id)] == ["report", "gallery"]
        with Session(store.engine) as session:  # one model, one version, registered once
            assert session.scalar(select(func.count()).select_from(RegisteredModelRow)) == 1
            assert session.scalar(select(func.count()).select_from(ModelVersionRow)) == 1
    finally:
        store.close()


def test_an_alert_is_claimed_by_exactly_one_process(db_url: str) -> None:
    upgrade(db_url)
    keys = [ledger.claim_key("pager", f"fingerprint-{i}") for i in range(20)]
    barrier, results = SPAWN.Barrier(WORKERS), SPAWN.Queue()
    run_processes(_claim_alerts, [(db_url, barrier, keys, results) for _ in range(WORKERS)])
    claims = drain(results, WORKERS * len(keys))
    winners = {key: sum(won for k, won in claims if k == key) for key in keys}
    assert winners == dict.fromkeys(keys, 1)


def test_auditors_starting_on_a_new_sqlite_file_migrate_it_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'auditor.db'}"
    barrier = SPAWN.Barrier(WORKERS)
    run_processes(_open_new_sqlite, [(url, barrier)] * WORKERS)
    assert current(url) == head()


def test_an_auditor_killed_mid_transaction_leaves_no_rows(db_url: str) -> None:
    upgrade(db_url)
    written = SPAWN.Event()
    process = SPAWN.Process(target=_hang_in_finish, args=(db_url, written))
    process.start()
    try:
        assert written.wait(JOIN_TIMEOUT_S), "the auditor process never wrote its results"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.join(JOIN_TIMEOUT_S)
    assert process.exitcode == -signal.SIGKILL

    store = AuditStore(db_url, create=False)
    try:
        (killed,) = store.list_audits()
        assert (killed.status, killed.owner_pid) == ("running", process.pid)
        for row in (
            ChannelStatRow,
            DropoutResultRow,
            FindingRow,
            ClusterRow,
            RelevanceBootstrapRow,
        ):
            assert count(store.engine, row, killed.id) == 0

        assert store.mark_stale_running_as_failed() == 1  # its process is gone
        audit = store.get_audit(killed.id)
        assert audit.status == "failed"
        assert audit.error == "interrupted: the auditor process ended before the audit finished"
        assert (audit.channel_stats, audit.findings, audit.bootstrap) == ([], [], None)

        after = start(store)  # the database is not left locked
        store.finish_audit(after, make_result())
        assert store.get_audit(after).status == "succeeded"
    finally:
        store.close()


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    yield
    assert SPAWN.active_children() == []
