"""Fault injection: real `auditor audit` subprocesses killed with SIGKILL in each stage, a full
disk under the artefact folder, the database connection dropped mid-commit, the MLflow server
killed mid-download. After each, the store holds only whole audits (a killed audit is failed by
the next audit's stale-audit recovery, without one result row), and no artefact folder or
sample scratch folder of the broken audit is left.

The moment of each fault is found from outside, as an operator would: the progress bar that
names the pass (stderr, rendered as on a terminal), the files the audit writes, a lock held
from a second database connection (the audit then waits in its commit), the server's socket.
Audits here are small (64 samples per set, short dropout and gallery) so that the file stays
within a few minutes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest
import yaml
from mlflow import MlflowClient
from sqlalchemy import func, select

from auditor.artefacts.gallery_files import MANIFEST
from auditor.demo.run import save_npz
from auditor.store import AuditStore, upgrade
from auditor.store.audit_writes import INTERRUPTED
from auditor.store.schema import AuditRow, Base, ModelVersionRow

from . import test_store
from .conftest import Scenario, _free_port, _stop, _wait_for_health, audit_config

pytestmark = pytest.mark.slow
postgresql_url = test_store.postgresql_url

AUDITOR = str(Path(sys.executable).with_name("auditor"))
N_PER_SET = 64
WAIT_S = 240
POLL_S = 0.01
#: rich draws its bars as on a terminal (live, one line per pass), wide enough for any name
LIVE_BARS = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "NO_COLOR": "1", "COLUMNS": "200"}
SMALL_AUDIT = {
    "dropout": {"random_repeats": 1, "dose_response_fractions": []},
    "channels": {"top_k": 3, "min_class_samples": 8},
    "gallery": {"samples_per_channel": 2, "thumbnail": 32},
}


@pytest.fixture(scope="module")
def small_sets(
    shortcut_scenario: Scenario, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The first 64 samples of the shortcut scenario's validation and production sets."""
    root = tmp_path_factory.mktemp("fault-samples")
    with (
        np.load(shortcut_scenario.validation) as validation,
        np.load(shortcut_scenario.production) as production,
    ):
        return {
            "validation": save_npz(
                root / "validation.npz",
                validation["images"][:N_PER_SET],
                validation["labels"][:N_PER_SET],
                "val",
            ),
            "production": save_npz(
                root / "production.npz", production["images"][:N_PER_SET], None, "prod"
            ),
        }


@dataclass(frozen=True)
class Workspace:
    """One case's files: config, findings database, artefact root, the audit's temporary folder."""

    root: Path
    config: dict

    @property
    def artifacts(self) -> Path:
        return Path(self.config["artifacts_dir"])

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def folder(self, audit_id: int) -> Path:
        return self.artifacts / f"audit-{audit_id}"

    def sample_scratch(self) -> list[Path]:
        """The samples' scratch folders (`auditor-samples-*`, wherever below the temporary folder)."""
        return sorted(self.tmp.rglob("auditor-samples-*"))

    def leftovers(self) -> list[Path]:
        """Anything of the auditor's in the temporary folder (`auditor-*` files and folders)."""
        return sorted(self.tmp.rglob("auditor-*"))

    def write(self, config: dict, name: str = "audit.yaml") -> Path:
        path = self.root / name
        path.write_text(yaml.safe_dump(config))
        return path

    def env(self, **extra: str) -> dict[str, str]:
        """The audit's environment: its own temporary folder (where sample scratch folders go)."""
        self.tmp.mkdir(exist_ok=True)
        return {**os.environ, "TMPDIR": str(self.tmp), **extra}


def workspace(
    scenario: Scenario, sets: dict[str, Path], tmp_path: Path, *, store_url: str | None = None
) -> Workspace:
    config = audit_config(scenario, tmp_path, samples=list(sets.items()), **SMALL_AUDIT)
    if store_url is not None:
        config["store_url"] = store_url
    return Workspace(tmp_path, config)


class RunningAudit:
    """`auditor audit` in the background, its stderr in a file."""

    def __init__(self, space: Workspace, *, quiet: bool = False):
        self.space = space
        self.stderr_path = space.root / "stderr"
        command = [
            AUDITOR,
            "audit",
            "--config",
            str(space.write(space.config)),
            *(["--quiet"] if quiet else []),
        ]
        with open(space.root / "stdout", "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env=space.env() if quiet else space.env(**LIVE_BARS),
            )  # fmt: skip

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], object], what: str) -> object:
        """Poll `condition()` until it is truthy; fail if the audit ends first."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.process.poll() is not None:
                pytest.fail(
                    f"the audit ended (exit {self.process.returncode}) before {what}:\n{self.stderr[-3000:]}"
                )
            time.sleep(POLL_S)
        pytest.fail(f"timed out after {WAIT_S} s waiting for {what}")

    def kill(self) -> None:
        """SIGKILL, and reap the process (its pid is gone, as after a crash)."""
        self.process.kill()
        self.process.wait(timeout=30)

    def finish(self, timeout: float = WAIT_S) -> int:
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()


@contextlib.contextmanager
def audit_process(space: Workspace, **kwargs) -> Iterator[RunningAudit]:
    audit = RunningAudit(space, **kwargs)
    try:
        yield audit
    finally:
        audit.close()


def running_audit_id(url: str) -> int | None:
    """The id of the running audit (None before the audit process has started one)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return None
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
            ) as db:
                row = db.execute("SELECT id FROM audits WHERE status = 'running'").fetchone()
        except sqlite3.OperationalError:  # the schema is still being created
            return None
        return None if row is None else row[0]
    with psycopg.connect(libpq(url)) as db:
        row = db.execute("SELECT id FROM audits WHERE status = 'running'").fetchone()
    return None if row is None else row[0]


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def results_of(url: str, audit_id: int) -> dict[str, int]:
    """Rows of `audit_id` in every table that references audits (the results, alerts, ...)
    that hold any, plus the model versions (written only by a commit)."""
    store = AuditStore(url)
    try:
        with store.transaction(write=False) as session:
            counts = {
                table.name: session.execute(
                    select(func.count()).select_from(table).where(table.c.audit_id == audit_id)
                ).scalar_one()
                for table in Base.metadata.sorted_tables
                if "audit_id" in table.c
            }
            counts["model_versions"] = session.execute(
                select(func.count(ModelVersionRow.id))
            ).scalar_one()
    finally:
        store.close()
    return {name: n for name, n in counts.items() if n}


def audits_in(url: str) -> list[tuple[int, str, str | None]]:
    store = AuditStore(url)
    try:
        with store.transaction(write=False) as session:
            return [
                tuple(row)
                for row in session.execute(
                    select(AuditRow.id, AuditRow.status, AuditRow.error).order_by(AuditRow.id)
                )
            ]
    finally:
        store.close()


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def run_next_audit(space: Workspace) -> None:
    """The next audit on the same store (its start runs the stale-audit recovery); it fails
    fast on a sample file that does not exist, which is all it needs to do here."""
    config = {**space.config, "samples": [{"name": "gone", "uri": str(space.root / "gone.npz")}]}
    result = subprocess.run(
        [AUDITOR, "audit", "--config", str(space.write(config, "next.yaml")), "--quiet"],
        check=False, capture_output=True, text=True, timeout=WAIT_S, stdin=subprocess.DEVNULL,
        env=space.env(),
    )  # fmt: skip
    assert result.returncode == 2 and "gone.npz" in one_error_line(result.stderr), result.stderr


def assert_recovered(space: Workspace, killed: int) -> None:
    """The killed audit is failed as interrupted, without a row of results; the next audit is
    whole too (failed on its missing samples); no folder of either is left."""
    url = space.config["store_url"]
    audits = audits_in(url)
    assert audits[0] == (killed, "failed", INTERRUPTED)
    assert [(status, "gone.npz" in error) for _, status, error in audits[1:]] == [("failed", True)]
    assert results_of(url, killed) == {}
    assert not space.folder(killed).exists()
    assert space.leftovers() == []


# --- SIGKILL in each stage, then the next audit ----------------------------------------------


@dataclass(frozen=True)
class Stage:
    """Where to kill: `reached(audit, id)` says the audit is in the stage; `left(audit, id)` that it
    has moved on (checked while the audit is stopped, so the kill lands in the stage)."""

    reached: Callable[[RunningAudit, int], bool]
    left: Callable[[RunningAudit, int], bool]


def bar(name: str) -> Callable[[RunningAudit, int], bool]:
    return lambda audit, _id: name in audit.stderr


def gallery_started(audit: RunningAudit, audit_id: int) -> bool:
    return (audit.space.folder(audit_id) / "gallery").exists()


def gallery_written(audit: RunningAudit, audit_id: int) -> bool:
    return (audit.space.folder(audit_id) / "gallery" / MANIFEST).exists()


STAGES = {
    "load": Stage(lambda audit, _id: bool(audit.space.sample_scratch()), bar("relevance at layer")),
    "relevance_pass": Stage(bar("relevance at layer"), bar("channel dropout")),
    "dropout": Stage(bar("channel dropout"), bar("probe grayscale")),
    "probes": Stage(bar("probe grayscale"), bar("embeddings at")),
    "gallery": Stage(gallery_started, gallery_written),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_in_a_stage_leaves_only_whole_audits(
    shortcut_scenario, small_sets, tmp_path, stage
):
    """SIGKILL in the stage (the audit stopped first, to check it is still in it): the audit
    stays `running` with whatever files it had; the next audit's start fails it as interrupted,
    without a result row, and removes its artefact folder and sample scratch folder."""
    space = workspace(shortcut_scenario, small_sets, tmp_path)
    url = space.config["store_url"]
    with audit_process(space) as audit:
        audit_id = audit.wait_for(lambda: running_audit_id(url), "the audit started")
        audit.wait_for(lambda: STAGES[stage].reached(audit, audit_id), f"the {stage} stage")
        audit.process.send_signal(signal.SIGSTOP)
        assert not STAGES[stage].left(audit, audit_id), f"the audit had left the {stage} stage"
        audit.kill()
    assert audits_in(url) == [(audit_id, "running", None)]  # nothing ran after the kill
    if stage == "gallery":
        assert space.folder(audit_id).exists()  # what the recovery has to remove

    run_next_audit(space)
    assert_recovered(space, audit_id)


# --- PostgreSQL: the audit held in its commit by a table lock --------------------------------


@contextlib.contextmanager
def commit_blocked(audit: RunningAudit, audit_id: int, url: str) -> Iterator[int]:
    """Hold `LOCK TABLE channel_stats IN ACCESS EXCLUSIVE MODE` in an open transaction of a
    second connection from the gallery stage on; yield the audit's backend pid once it waits
    for the lock in its commit (the audit row locked, the model version written, the results
    not yet). The lock is released on exit."""
    audit.wait_for(lambda: gallery_started(audit, audit_id), "the gallery stage")
    with psycopg.connect(libpq(url)) as lock, psycopg.connect(libpq(url), autocommit=True) as watch:
        lock.execute("LOCK TABLE channel_stats IN ACCESS EXCLUSIVE MODE")
        holder = lock.info.backend_pid

        def blocked_backend() -> int | None:
            row = watch.execute(
                "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [holder]
            ).fetchone()
            return None if row is None else row[0]

        backend = audit.wait_for(blocked_backend, "the audit waiting for the lock in its commit")
        try:
            yield backend
        finally:
            lock.rollback()
            deadline = time.monotonic() + 30
            while watch.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend]
            ).fetchone():
                assert time.monotonic() < deadline, "the killed audit's backend did not end"
                time.sleep(0.1)


@pytest.fixture
def pg_space(shortcut_scenario, small_sets, tmp_path, postgresql_url) -> Workspace:
    upgrade(postgresql_url)  # a server database is never upgraded by an audit
    return workspace(shortcut_scenario, small_sets, tmp_path, store_url=postgresql_url)


def test_sigkill_in_the_commit_leaves_only_whole_audits(pg_space):
    """SIGKILL while the audit's commit waits for a lock (PostgreSQL): its transaction is rolled
    back when the server sees the connection gone; the next audit fails it as interrupted,
    without a result row or model version, and removes its files."""
    url = pg_space.config["store_url"]
    with audit_process(pg_space) as audit:
        audit_id = audit.wait_for(lambda: running_audit_id(url), "the audit started")
        with commit_blocked(audit, audit_id, url):
            audit.kill()
    assert audits_in(url) == [(audit_id, "running", None)] and results_of(url, audit_id) == {}
    assert pg_space.folder(audit_id).exists()

    run_next_audit(pg_space)
    assert_recovered(pg_space, audit_id)


def test_database_connection_dropped_mid_commit(pg_space):
    """`pg_terminate_backend` of the audit's connection while its commit waits for a lock: the
    audit ends with one line naming the database, exit 2, stored failed without a result row,
    its files removed."""
    url = pg_space.config["store_url"]
    with audit_process(pg_space, quiet=True) as audit:
        audit_id = audit.wait_for(lambda: running_audit_id(url), "the audit started")
        with (
            commit_blocked(audit, audit_id, url) as backend,
            psycopg.connect(libpq(url), autocommit=True) as admin,
        ):
            assert admin.execute("SELECT pg_terminate_backend(%s)", [backend]).fetchone()[0]
        returncode = audit.finish()

    line = one_error_line(audit.stderr)
    assert returncode == 2 and "database" in line and "-- fix:" in line, audit.stderr
    [(listed, status, error)] = audits_in(url)
    assert (listed, status) == (audit_id, "failed") and "terminat" in error
    assert results_of(url, audit_id) == {}
    assert not pg_space.folder(audit_id).exists() and pg_space.leftovers() == []


# --- a full disk under the artefact folder ---------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[None]:
    """A tmpfs of `size` mounted on `folder` (needs root); skips the test where it cannot be."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        check=False,
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"SKIPPED LOUDLY: cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}"
        )
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_disk_full_under_the_artefact_folder(shortcut_scenario, small_sets, tmp_path):
    """The artefact folder is on a 256 KiB file system: the subclass files fit, the gallery
    does not. The audit ends with one line naming the folder and the fix, exit 2, is stored
    failed without a result row, and no partial artefact folder or scratch folder is left."""
    space = workspace(shortcut_scenario, small_sets, tmp_path)
    space.config["gallery"] = {"samples_per_channel": 8, "thumbnail": 128}  # ~100 KiB per strip
    url = space.config["store_url"]
    with small_tmpfs(space.artifacts, "256k"):
        with audit_process(space, quiet=True) as audit:
            returncode = audit.finish()
        line = one_error_line(audit.stderr)
        assert returncode == 2, audit.stderr
        assert (
            str(space.artifacts) in line and "no space left on device" in line and "-- fix:" in line
        )
        [(audit_id, status, error)] = audits_in(url)
        assert status == "failed" and "no space left on device" in error
        assert results_of(url, audit_id) == {}
        assert list(space.artifacts.iterdir()) == [] and space.leftovers() == []


# --- the MLflow server killed while the audit downloads its samples ----------------------------

BIG_SET = 8000  # images of 64 x 64 x 3 bytes: a ~100 MB download


@contextlib.contextmanager
def tracking_server(root: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A dedicated MLflow server (it will be killed), as conftest's `mlflow_server`."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
        )
    try:
        _wait_for_health(uri, server, log_path)
        yield uri, server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGCONT)
        _stop(server)


def log_big_samples(uri: str, root: Path) -> str:
    """A large production set logged as an artefact; returns its runs:/ URI."""
    rng = np.random.default_rng(0)
    path = root / "big.npz"
    images = rng.integers(0, 256, (BIG_SET, 64, 64, 3), dtype=np.uint8)
    np.savez(path, images=images, ids=np.array([f"big-{i:05d}" for i in range(BIG_SET)]))
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("faults"))
    client.log_artifact(run.info.run_id, str(path), artifact_path="samples")
    client.set_terminated(run.info.run_id)
    path.unlink()
    return f"runs:/{run.info.run_id}/samples/big.npz"


def test_mlflow_server_killed_mid_download(shortcut_scenario, small_sets, tmp_path):
    """The server is stopped once the sample file has begun to arrive, checked to be partial,
    then killed: one line naming the tracking server and the fix, exit 2, the audit stored
    failed, no scratch folder (with the partial download) and no artefact folder left."""
    space = workspace(shortcut_scenario, small_sets, tmp_path)
    (tmp_path / "server").mkdir()
    with tracking_server(tmp_path / "server") as (uri, server):
        space.config["tracking_uri"] = uri
        space.config["samples"] = [{"name": "big", "uri": log_big_samples(uri, tmp_path)}]
        with audit_process(space, quiet=True) as audit:

            def partial_download() -> list[Path]:
                return sorted(space.tmp.rglob("big.npz"))

            [download] = audit.wait_for(partial_download, "the download began")
            os.killpg(server.pid, signal.SIGSTOP)
            assert download.stat().st_size < BIG_SET * 64 * 64 * 3, "the download had finished"
            os.killpg(server.pid, signal.SIGKILL)
            returncode = audit.finish()

    line = one_error_line(audit.stderr)
    assert returncode == 2, audit.stderr
    assert uri in line and "-- fix:" in line and "tracking" in line, line
    [(audit_id, status, error)] = audits_in(space.config["store_url"])
    assert status == "failed" and uri in error
    assert results_of(space.config["store_url"], audit_id) == {}
    assert not space.folder(audit_id).exists() and space.leftovers() == []
