"""The `auditor` command line.

Every failure caused by input ends as one line `error: ... -- fix: ...` on stderr (secrets
masked by `auditor.redaction.redact`, as in every log line) and exit
status 2 (1 for an unexpected internal error), never a traceback. An audit stopped by Ctrl-C
or SIGTERM is stored as cancelled and ends as one line `audit <id> cancelled (SIGINT): ...`
with exit status 130 (SIGINT) or 143 (SIGTERM); any other command interrupted exits 130.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from auditor.audit.cancellation import AuditCancelled, CancelRequest
from auditor.cli.dashboard import dashboard
from auditor.cli.neighbours import neighbours
from auditor.cli.report import report
from auditor.cli.schedule import schedule
from auditor.errors import AuditorError
from auditor.redaction import redact

app = typer.Typer(
    help="Audit image classifiers for shortcut strategies with per-channel relevance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Create or inspect the findings database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="audit config (YAML)")]


@app.command()
def audit(
    config: ConfigOption,
    report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Run one audit of the model and samples named in CONFIG and store its findings."""
    from auditor.audit.lifecycle import run_audit
    from auditor.audit.summary import print_summary
    from auditor.config import load_config
    from auditor.execution import progress

    progress.enabled = not quiet
    cfg = load_config(config)
    outcome = run_audit(cfg, report_path=report)
    print_summary(out, outcome, cfg)


@app.command()
def layers(config: ConfigOption) -> None:
    """List the module paths of the configured model with their output shapes, marking those
    that can be audited (model.layer) and the default."""
    import torch

    from auditor.audit.preflight import layer_statuses, shape_text
    from auditor.audit.resolve import build_graph
    from auditor.config import load_config
    from auditor.data.samples import load_samples, normalize
    from auditor.tracking.resolve import load_model

    cfg = load_config(config)
    loaded = load_model(
        cfg.model.uri,
        tracking_uri=cfg.tracking_uri,
        trusted=cfg.model.trusted,
        input_size=cfg.preprocess.size,
    )
    with load_samples(
        cfg.samples[:1], tracking_uri=cfg.tracking_uri, preprocess=cfg.preprocess
    ) as samples:
        graph = build_graph(loaded, samples, cfg)
        example = normalize(torch.from_numpy(samples.images[:2]), cfg.preprocess)
    default = graph.default_layer()
    statuses = layer_statuses(graph, example)
    width = max(len(s.name) for s in statuses)
    for status in statuses:
        shape = "?" if status.shape is None else shape_text(status.shape)
        verdict = "auditable" if status.problem is None else f"not auditable: {status.problem}"
        marker = " (default)" if status.name == default else ""
        out.print(f"{status.name:<{width}}  {shape:<18}  {verdict}{marker}", highlight=False, soft_wrap=True)


@app.command()
def demo(
    home: Annotated[Path, typer.Option(help="folder for the MLflow store, database and report")] = Path(
        ".auditor"
    ),
    seed: Annotated[int, typer.Option(help="seed of data, training and audit")] = 0,
) -> None:
    """Train a counterfeit detector with a colour shortcut, log it to a local MLflow store,
    and audit it (fully offline)."""
    from auditor.demo.run import run_demo

    run_demo(home=home, seed=seed, console=out)


@db_app.command("upgrade")
def db_upgrade(
    url: Annotated[str | None, typer.Option(help="database URL (default: AUDITOR_DB_URL or SQLite)")] = None,
) -> None:
    """Upgrade the findings database to the newest schema (Alembic)."""
    from auditor.config import default_store_url
    from auditor.store.migrate import current, upgrade

    target = url or default_store_url()
    upgrade(target)
    out.print(f"{redact(target)} is at schema revision {current(target)}")


@db_app.command("current")
def db_current(
    url: Annotated[str | None, typer.Option(help="database URL (default: AUDITOR_DB_URL or SQLite)")] = None,
) -> None:
    """Print the schema revision of the findings database."""
    from auditor.config import default_store_url
    from auditor.store.migrate import current, head

    revision = current(url or default_store_url())
    out.print(f"{revision or '(empty)'} (newest: {head()})")


app.command("neighbours")(neighbours)
app.command("report")(report)
app.command()(schedule)
app.command("dashboard")(dashboard)


def _configure_logging() -> None:
    """The auditor's warnings (and the log sink's alerts) on stderr, whatever a library does to
    the root logger; MLflow's INFO logs and download bars would drown the audit's own progress
    and summary."""
    import logging

    from auditor.logs import SHORT_FORMAT, configure_logging

    configure_logging(logging.WARNING, SHORT_FORMAT)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    logging.getLogger("alembic").setLevel(logging.WARNING)


def main() -> None:
    _configure_logging()
    try:
        app()
    except AuditCancelled as err:  # stopped on purpose: no "error:", the conventional status
        err_console.print(redact(str(err)), style="yellow", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except AuditorError as err:
        err_console.print(f"[bold red]error:[/] {redact(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, CancelRequest) as err:  # outside an audit (none was stored)
        signum = getattr(err, "signum", signal.SIGINT)
        err_console.print(f"interrupted ({signal.Signals(signum).name})", style="yellow")
        sys.exit(128 + signum)
    except Exception as err:  # an unexpected failure: still one line, with where to report it
        err_console.print(
            f"[bold red]internal error:[/] {type(err).__name__}: {redact(str(err))} -- please report this "
            "with the config; rerun with AUDITOR_DEBUG=1 for the traceback",
            highlight=False,
            soft_wrap=True,
        )
        if _debug():
            raise
        sys.exit(1)


def _debug() -> bool:
    return os.environ.get("AUDITOR_DEBUG") == "1"


if __name__ == "__main__":
    main()
