"""Operations commands of the `auditor` CLI: `auditor schedule` (registered in auditor/cli.py).

Exit status of `auditor schedule --once`: 0 when every job succeeded, 3 when at least one
failed, was cancelled (stopped by a SIGTERM / SIGINT) or was skipped (the table on stdout and
the health file say which and why), 2 for a bad schedule or audit config. The daemon exits 0
after a SIGTERM / SIGINT.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from auditor.logs import LOG_FORMAT, configure_logging
from auditor.scheduler.health import JobResult

JOBS_FAILED_EXIT = 3
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "skipped": "yellow",
}


def schedule(
    config: Annotated[Path, typer.Option("--config", "-c", help="schedule file (YAML)")],
    once: Annotated[
        bool, typer.Option("--once", help="run every job once and exit (status 3 if one failed)")
    ] = False,
) -> None:
    """Run the audits of the schedule on their cron / interval triggers until SIGTERM or
    SIGINT, or with --once run each once and exit."""
    from auditor.scheduler.config import load_schedule
    from auditor.scheduler.daemon import Daemon, check_jobs, run_once

    configure_logging(logging.INFO, LOG_FORMAT)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    plan = load_schedule(config)
    check_jobs(plan)
    if not once:
        Daemon(plan).serve()
        return
    results = run_once(plan)
    print_results(Console(), results)
    if any(r.status != "succeeded" for r in results):
        raise typer.Exit(JOBS_FAILED_EXIT)


def print_results(console: Console, results: list[JobResult]) -> None:
    """One row per job: status, attempts, audit, model version, findings, error."""
    table = Table(title="Scheduled audits", title_justify="left")
    for column in ("job", "status", "attempts", "audit", "model", "findings", "error"):
        table.add_column(column)
    for r in results:
        model = f"{r.model} v{r.model_version}" if r.model_version else (r.model or "-")
        findings = ", ".join(f"{n} {s}" for s, n in r.findings.items() if n) or "-"
        table.add_row(
            r.job_id,
            f"[{STATUS_STYLE[r.status]}]{r.status}[/]",
            str(r.attempts),
            "-" if r.audit_id is None else str(r.audit_id),
            model,
            findings if r.status == "succeeded" else "-",
            r.error or "",
        )
    console.print(table)
