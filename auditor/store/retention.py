"""Retention: delete the artefact files of old audits, keep their statistics and findings.

An audit's artefacts (report, galleries, arrays; `artefacts` rows) are pruned when it
finished more than `retention.artefact_days` days ago, is not among the `keep_last` newest
succeeded audits of its registered model, and is not a pinned drift baseline. Pruning deletes
the file or folder and sets `pruned_at`; every row stays, and drift keeps working against a
pruned audit (its relevance bootstrap is a statistic, in the database).

Files go first, rows second: a crash in between leaves rows whose files are already gone,
which the next run marks. Only local paths (or `file:` URIs) are deleted; other URIs are left
alone and reported.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import func, select, update

from auditor.config.operations import RetentionSettings
from auditor.store.repository import AuditStore
from auditor.store.schema import ArtefactRow, AuditRow, ModelVersionRow, utcnow

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    """What a retention run did: artefacts pruned (file deleted or already gone), and the
    URIs it left alone because they are not local files."""

    pruned: list[int] = field(default_factory=list)
    not_local: list[str] = field(default_factory=list)


def local_path(uri: str) -> Path | None:
    """The path of a local artefact (a plain path or a `file:` URI); None for other URIs."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme == "":
        return Path(uri)
    return None


def prunable(
    store: AuditStore, settings: RetentionSettings, pinned: Iterable[int], now: datetime
) -> list[ArtefactRow]:
    """Unpruned artefacts of the audits the policy lets go (none when `artefact_days` is
    unset)."""
    if settings.artefact_days is None:
        return []
    recency = (
        func.row_number()
        .over(
            partition_by=ModelVersionRow.model_id,
            order_by=(AuditRow.finished_at.desc(), AuditRow.id.desc()),
        )
        .label("recency")
    )
    ranked = (
        select(AuditRow.id, recency)
        .join(AuditRow.model_version)
        .where(AuditRow.status == "succeeded")
        .subquery()
    )
    newest = select(ranked.c.id).where(ranked.c.recency <= settings.keep_last)
    query = (
        select(ArtefactRow)
        .join(AuditRow, ArtefactRow.audit_id == AuditRow.id)
        .where(
            ArtefactRow.pruned_at.is_(None),
            AuditRow.status != "running",
            AuditRow.finished_at < now - timedelta(days=settings.artefact_days),
            AuditRow.id.not_in(newest),
            AuditRow.id.not_in(list(pinned)),
        )
        .order_by(ArtefactRow.id)
    )
    with store.transaction(write=False) as session:
        return list(session.scalars(query))


def prune_artefacts(
    store: AuditStore,
    settings: RetentionSettings,
    *,
    pinned: Iterable[int] = (),
    now: datetime | None = None,
) -> PruneReport:
    """Apply the retention policy once; `pinned`: audit ids whose artefacts always stay."""
    now = now or utcnow()
    report = PruneReport()
    for artefact in prunable(store, settings, pinned, now):
        path = local_path(artefact.uri)
        if path is None:
            report.not_local.append(artefact.uri)
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        report.pruned.append(artefact.id)
    if report.pruned:
        statement = (
            update(ArtefactRow)
            .where(ArtefactRow.id.in_(report.pruned), ArtefactRow.pruned_at.is_(None))
            .values(pruned_at=now)
        )
        with store.transaction() as session:
            session.execute(statement)
        log.info("retention: pruned %d artefacts", len(report.pruned))
    return report
