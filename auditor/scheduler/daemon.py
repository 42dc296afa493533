"""`auditor schedule`: run audits on cron / interval triggers (APScheduler 3), or each once.

The daemon keeps its jobs in an APScheduler `SQLAlchemyJobStore` (`jobstore_url`, by default
a SQLite file of its own beside the findings database, so that Alembic never sees the table).
Every job is `coalesce`d, runs at most one instance at a time, and a run missed while the
daemon was down still starts within `misfire_grace_time_s`. Audits run one at a time (one
worker: they are CPU-bound), each in its own process (`auditor.scheduler.runner`).

SIGTERM / SIGINT: no new audit starts, the running one gets `shutdown_grace_s` to finish and
is then stopped and recorded as cancelled; the daemon exits 0. Liveness: the health file and the
optional HTTP endpoint of `auditor.scheduler.health`.
"""

from __future__ import annotations

import logging
import threading

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from auditor.config import load_config
from auditor.scheduler.config import ScheduleConfig
from auditor.scheduler.health import Health, HealthServer, JobResult
from auditor.scheduler.runner import Shutdown, run_job, skipped

logger = logging.getLogger(__name__)

JOB_FUNCTION = "auditor.scheduler.daemon:scheduled_run"
JOBSTORE_TABLE = "auditor_scheduler_jobs"

# APScheduler's persistent job store refers to a module-level function by name; the daemon
# running in this process registers itself here for that function to find it.
_daemon: Daemon | None = None


def scheduled_run(job_id: str) -> None:
    """Run job `job_id` of the daemon of this process (called by APScheduler)."""
    if _daemon is None:
        raise RuntimeError(f"job {job_id} fired, but no scheduler daemon runs in this process")
    _daemon.run(job_id)


def check_jobs(schedule: ScheduleConfig) -> None:
    """Validate every job's audit config now (`ConfigError` names the first bad one), so that a
    typo fails at start rather than at 2 a.m."""
    for job in schedule.jobs:
        load_config(job.config)


def make_scheduler(schedule: ScheduleConfig) -> BackgroundScheduler:
    """A scheduler over the schedule's job store: one worker, coalesced runs, one instance per
    job, the schedule's misfire grace time and timezone."""
    return BackgroundScheduler(
        jobstores={
            "default": SQLAlchemyJobStore(url=schedule.jobstore_url, tablename=JOBSTORE_TABLE)
        },
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": schedule.misfire_grace_time_s,
        },
        timezone=schedule.timezone,
    )


def sync_jobs(scheduler: BackgroundScheduler, schedule: ScheduleConfig) -> None:
    """Make the (started) scheduler's job store hold exactly the schedule's jobs. A stored job
    whose trigger and misfire grace time are unchanged keeps its next run time, so a run that
    fell due while the daemon was down still starts, once; the others are (re)added."""
    stored = {job.id: job for job in scheduler.get_jobs()}
    for spec in schedule.jobs:
        trigger = spec.trigger(schedule.timezone)
        job = stored.pop(spec.id, None)
        unchanged = (
            job is not None
            and str(job.trigger) == str(trigger)
            and str(job.trigger.timezone) == str(trigger.timezone)
            and job.misfire_grace_time == schedule.misfire_grace_time_s
        )
        if not unchanged:
            scheduler.add_job(
                JOB_FUNCTION, trigger, args=[spec.id], id=spec.id, name=spec.id,
                replace_existing=True,
            )  # fmt: skip
    for job_id in stored:
        logger.info("job %s is no longer in the schedule: removed", job_id)
        scheduler.remove_job(job_id)


def run_once(schedule: ScheduleConfig) -> list[JobResult]:
    """Run every job once, in schedule order (for cron and CI). A SIGTERM / SIGINT stops as in
    the daemon; the jobs not yet started are `skipped`."""
    shutdown = Shutdown(schedule.shutdown_grace_s)
    shutdown.install()
    health = Health(schedule.health.file, schedule.health.heartbeat_s)
    health.set_status("running")
    results = []
    for spec in schedule.jobs:
        if shutdown.requested.is_set():
            results.append(skipped(spec))
            health.job_finished(results[-1])
        else:
            results.append(run_job(spec, schedule.retry, shutdown, health))
    health.set_status("stopped")
    return results


class Daemon:
    """The scheduler daemon: `serve()` blocks until SIGTERM / SIGINT."""

    def __init__(self, schedule: ScheduleConfig):
        self.schedule = schedule
        self.shutdown = Shutdown(schedule.shutdown_grace_s)
        self.health = Health(schedule.health.file, schedule.health.heartbeat_s)
        self._scheduler = make_scheduler(schedule)
        self._idle = threading.Condition()
        self._running = 0

    def run(self, job_id: str) -> None:
        """Run one job now (in a worker thread of the scheduler)."""
        if self.shutdown.requested.is_set():
            return
        with self._idle:
            self._running += 1
        try:
            run_job(self.schedule.job(job_id), self.schedule.retry, self.shutdown, self.health)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def serve(self) -> None:
        """Schedule the jobs and run until a signal; then wait for (or stop) the running audit."""
        global _daemon
        settings = self.schedule.health
        self.shutdown.install()
        server = None
        if settings.port is not None:
            server = HealthServer(self.health, settings.host, settings.port)
            server.start()
            logger.info("health endpoint on http://%s:%d/healthz", settings.host, server.port)
        _daemon = self
        try:
            self._scheduler.start(paused=True)
            sync_jobs(self._scheduler, self.schedule)
            self._scheduler.resume()
            self.health.set_status("running")
            self.health.beat(self._next_runs())
            while not self.shutdown.requested.wait(settings.heartbeat_s):
                self.health.beat(self._next_runs())
            self.health.set_status("stopping")
            self._scheduler.shutdown(wait=False)
            with self._idle:
                if self._running:
                    logger.info(
                        "waiting up to %g s for the running audit to finish",
                        self.schedule.shutdown_grace_s,
                    )
                self._idle.wait_for(lambda: self._running == 0)
        finally:
            _daemon = None
            if self._scheduler.running:
                self._scheduler.shutdown(wait=False)
            if server is not None:
                server.stop()
            self.health.set_status("stopped")
        logger.info("scheduler stopped")

    def _next_runs(self) -> dict[str, str | None]:
        return {
            job.id: job.next_run_time.isoformat() if job.next_run_time else None
            for job in self._scheduler.get_jobs()
        }
