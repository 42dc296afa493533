"""`auditor report`: one stored audit as a self-contained HTML page (`auditor.artefacts.html_report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report(
    audit: Annotated[int, typer.Option("--audit", help="audit id")],
    html: Annotated[Path, typer.Option("--html", help="write the HTML page here")],
    db: Annotated[
        str | None,
        typer.Option("--db", help="findings database URL (default: $AUDITOR_DB_URL, else .auditor/auditor.db)"),
    ] = None,
) -> None:
    """Write AUDIT's findings, evidence charts, channel galleries and review verdicts as one
    HTML file that opens offline."""
    from auditor.artefacts.html_report import write_audit_html
    from auditor.config import default_store_url
    from auditor.store import AuditStore

    store = AuditStore(db or default_store_url())
    try:
        path = write_audit_html(store, audit, html)
    finally:
        store.close()
    typer.echo(f"report of audit {audit}: {path}")
