"""The schedule file of `auditor schedule` (`schedule.yaml`): which audits run when.

```yaml
jobs:
  - id: counterfeit-nightly
    config: audits/counterfeit.yaml   # an audit config (paths: relative to this file's folder)
    cron: "0 2 * * *"                 # crontab expression, or:
    # interval: {hours: 6}            # weeks / days / hours / minutes / seconds
    report_dir: reports/              # optional: a JSON report per run, <id>-<UTC time>.json
timezone: UTC
jobstore_url: sqlite:///.auditor/scheduler.db   # default: $AUDITOR_SCHEDULER_DB_URL, else
                                                # scheduler.db beside the findings database
misfire_grace_time_s: 3600   # a run missed (daemon down) still starts this late, once
shutdown_grace_s: 60         # on SIGTERM/SIGINT the running audit gets this long to finish
retry: {attempts: 3, initial_delay_s: 30, max_delay_s: 600}
health: {file: .auditor/scheduler-health.json, host: 127.0.0.1, port: null, heartbeat_s: 10}
```
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from auditor.config import DEFAULT_HOME, default_store_url
from auditor.errors import ConfigError
from auditor.store.migrate import sqlite_path

SCHEDULE_FIX = "see the schedule format in deploy/README.md"


def default_jobstore_url() -> str:
    """`AUDITOR_SCHEDULER_DB_URL` if set, else `scheduler.db` beside the default findings
    database when that is a SQLite file, else under `.auditor/`. A database of its own keeps
    APScheduler's table out of the findings schema that Alembic manages."""
    if os.environ.get("AUDITOR_SCHEDULER_DB_URL"):
        return os.environ["AUDITOR_SCHEDULER_DB_URL"]
    store = sqlite_path(default_store_url())
    folder = store.parent if store is not None else DEFAULT_HOME
    return f"sqlite:///{folder / 'scheduler.db'}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interval(_Strict):
    """A fixed interval between runs."""

    weeks: int = Field(default=0, ge=0)
    days: int = Field(default=0, ge=0)
    hours: int = Field(default=0, ge=0)
    minutes: int = Field(default=0, ge=0)
    seconds: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _not_zero(self) -> Interval:
        if not any(self.model_dump().values()):
            raise ValueError("the interval must be longer than 0, e.g. {hours: 6}")
        return self


class JobSpec(_Strict):
    """One scheduled audit."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="unique; names reports and logs")
    config: Path = Field(description="audit config (YAML)")
    cron: str | None = Field(default=None, description="crontab: minute hour day month weekday")
    interval: Interval | None = None
    report_dir: Path | None = None

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str | None) -> str | None:
        if cron is not None:
            CronTrigger.from_crontab(cron)  # raises ValueError naming the bad field
        return cron

    @model_validator(mode="after")
    def _one_trigger(self) -> JobSpec:
        if (self.cron is None) == (self.interval is None):
            raise ValueError(f"job {self.id} needs exactly one of cron and interval")
        return self

    def trigger(self, timezone: str) -> BaseTrigger:
        if self.cron is not None:
            return CronTrigger.from_crontab(self.cron, timezone=timezone)
        assert self.interval is not None
        return IntervalTrigger(**self.interval.model_dump(), timezone=timezone)


class RetrySettings(_Strict):
    """Retries of a run that failed because MLflow or the database was unreachable."""

    attempts: int = Field(default=3, ge=1, le=20, description="attempts in all, the first included")
    initial_delay_s: float = Field(default=30.0, ge=0)
    max_delay_s: float = Field(default=600.0, ge=0)

    def delays(self) -> list[float]:
        """Seconds to wait before attempts 2, 3, ...: doubling from `initial_delay_s`, capped."""
        return [
            min(self.initial_delay_s * 2**i, self.max_delay_s) for i in range(self.attempts - 1)
        ]


class HealthSettings(_Strict):
    """Liveness of the daemon: a JSON file and/or an HTTP endpoint (`GET /healthz`)."""

    file: Path | None = Field(default=DEFAULT_HOME / "scheduler-health.json")
    host: str = Field(default="127.0.0.1", description="0.0.0.0 to answer probes from outside")
    port: int | None = Field(default=None, ge=0, le=65535, description="None: no HTTP endpoint")
    heartbeat_s: float = Field(default=10.0, gt=0)


class ScheduleConfig(_Strict):
    """A whole `schedule.yaml`."""

    jobs: list[JobSpec] = Field(min_length=1)
    timezone: str = "UTC"
    jobstore_url: str = Field(default_factory=default_jobstore_url)
    misfire_grace_time_s: int = Field(default=3600, ge=1)
    shutdown_grace_s: float = Field(default=60.0, ge=0)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    health: HealthSettings = Field(default_factory=HealthSettings)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, timezone: str) -> str:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {timezone!r}, use an IANA name like Europe/Berlin")
        return timezone

    @model_validator(mode="after")
    def _unique_ids(self) -> ScheduleConfig:
        ids = [job.id for job in self.jobs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"job ids must be unique, got {ids}")
        return self

    def job(self, job_id: str) -> JobSpec:
        return next(job for job in self.jobs if job.id == job_id)


def load_schedule(path: str | Path) -> ScheduleConfig:
    """Read and validate a schedule file. Relative paths in it (job configs, report folders,
    the health file) are relative to its folder; URLs are used as given. Every problem becomes
    one `ConfigError` line."""
    path = Path(path)
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"schedule file {path} does not exist", "pass the path of a schedule.yaml"
        )
    except yaml.YAMLError:
        raise ConfigError(f"schedule file {path} is not valid YAML", "fix the YAML syntax")
    if not isinstance(raw, dict):
        raise ConfigError(f"schedule file {path} must hold a mapping", SCHEDULE_FIX)
    try:
        schedule = ScheduleConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = re.sub(r"^Value error, ", "", first["msg"])
        raise ConfigError(f"schedule file {path}: {field}: {message}", SCHEDULE_FIX)
    base = path.parent
    for job in schedule.jobs:
        job.config = base / job.config
        job.report_dir = None if job.report_dir is None else base / job.report_dir
    if "file" in schedule.health.model_fields_set and schedule.health.file is not None:
        schedule.health.file = base / schedule.health.file
    return schedule
