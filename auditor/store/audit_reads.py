"""Reading audits back: one audit with its results, the newest audits, baselines, artefacts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from auditor.errors import ConfigError, StoreError
from auditor.store.connection import StoreConnection
from auditor.store.schema import (
    AlertRow,
    ArtefactRow,
    AuditRow,
    FindingRow,
    ModelVersionRow,
    RegisteredModelRow,
)


class AuditReads(StoreConnection):
    """Reads of stored audits; returned ORM rows are detached but usable: `get_audit` loads
    every relationship, `list_audits` only the model version."""

    def get_audit(self, audit_id: int) -> AuditRow:
        """One audit with its model version and every result row loaded."""
        query = (
            select(AuditRow)
            .where(AuditRow.id == audit_id)
            .options(
                selectinload(AuditRow.model_version).selectinload(ModelVersionRow.model),
                selectinload(AuditRow.channel_stats),
                selectinload(AuditRow.dropout_results),
                selectinload(AuditRow.probe_results),
                selectinload(AuditRow.findings).selectinload(FindingRow.artefacts),
                selectinload(AuditRow.findings).selectinload(FindingRow.reviews),
                selectinload(AuditRow.clusters),
                selectinload(AuditRow.bootstrap),
                selectinload(AuditRow.drift_stats),
                selectinload(AuditRow.artefacts),
            )
        )
        with self.transaction(write=False) as session:
            audit = session.scalars(query).one_or_none()
        if audit is None:
            raise StoreError(
                f"audit {audit_id} does not exist in database {self._display_url}",
                "pass the id of an existing audit",
            )
        return audit

    def list_audits(self, limit: int = 50) -> list[AuditRow]:
        """The newest audits first, with their model version (result rows not loaded)."""
        query = (
            select(AuditRow)
            .order_by(AuditRow.started_at.desc(), AuditRow.id.desc())
            .limit(limit)
            .options(selectinload(AuditRow.model_version).selectinload(ModelVersionRow.model))
        )
        with self.transaction(write=False) as session:
            return list(session.scalars(query))

    def findings(self, audit_id: int) -> list[FindingRow]:
        """The findings of one audit, in the order they were reported."""
        query = select(FindingRow).where(FindingRow.audit_id == audit_id).order_by(FindingRow.id)
        with self.transaction(write=False) as session:
            return list(session.scalars(query))

    def alerts(self, audit_id: int) -> list[AlertRow]:
        """Every alert raised for one audit (sent, failed or suppressed), oldest first."""
        query = select(AlertRow).where(AlertRow.audit_id == audit_id).order_by(AlertRow.id)
        with self.transaction(write=False) as session:
            return list(session.scalars(query))

    def drift_baseline(
        self, model_name: str, layer: str, *, pinned: int | None = None
    ) -> AuditRow | None:
        """The audit a new audit of `model_name` at `layer` is compared with, with its channel
        stats, probe results, clusters and bootstrap loaded: audit `pinned` when given, else
        the newest succeeded audit of that registered model at that layer (None: none yet).
        A pinned audit that is not a succeeded audit of that model and layer is a
        `ConfigError`."""
        query = select(AuditRow).options(
            selectinload(AuditRow.model_version).selectinload(ModelVersionRow.model),
            selectinload(AuditRow.channel_stats),
            selectinload(AuditRow.probe_results),
            selectinload(AuditRow.clusters),
            selectinload(AuditRow.bootstrap),
        )
        if pinned is None:
            query = (
                query.join(AuditRow.model_version)
                .join(ModelVersionRow.model)
                .where(
                    RegisteredModelRow.name == model_name,
                    AuditRow.layer == layer,
                    AuditRow.status == "succeeded",
                )
                .order_by(AuditRow.finished_at.desc(), AuditRow.id.desc())
                .limit(1)
            )
        else:
            query = query.where(AuditRow.id == pinned)
        with self.transaction(write=False) as session:
            audit = session.scalars(query).one_or_none()
        if pinned is not None and not _is_audit_of(audit, model_name, layer):
            state = "does not exist" if audit is None else _describe_audit(audit)
            raise ConfigError(
                f"drift.baseline_audit_id = {pinned}: that audit {state}, not a succeeded audit "
                f"of model {model_name!r} at layer {layer!r}",
                "pin a succeeded audit of this model and layer, or remove drift.baseline_audit_id",
            )
        return audit

    def previous_audit_id(self, audit_id: int) -> int | None:
        """The newest succeeded audit of the same registered model that finished before this
        (finished) audit; None for the first one."""
        with self.transaction(write=False) as session:
            audit = session.get(AuditRow, audit_id)
            if audit is None or audit.model_version is None or audit.finished_at is None:
                return None
            query = (
                select(AuditRow.id)
                .join(AuditRow.model_version)
                .where(
                    ModelVersionRow.model_id == audit.model_version.model_id,
                    AuditRow.status == "succeeded",
                    AuditRow.id != audit_id,
                    AuditRow.finished_at <= audit.finished_at,
                )
                .order_by(AuditRow.finished_at.desc(), AuditRow.id.desc())
                .limit(1)
            )
            return session.scalars(query).one_or_none()

    def artefacts(self, audit_id: int) -> list[ArtefactRow]:
        """The artefacts of one audit (pruned ones keep their row, with `pruned_at`)."""
        query = select(ArtefactRow).where(ArtefactRow.audit_id == audit_id).order_by(ArtefactRow.id)
        with self.transaction(write=False) as session:
            return list(session.scalars(query))


def _is_audit_of(audit: AuditRow | None, model_name: str, layer: str) -> bool:
    return (
        audit is not None
        and audit.status == "succeeded"
        and audit.layer == layer
        and audit.model_version is not None
        and audit.model_version.model.name == model_name
    )


def _describe_audit(audit: AuditRow) -> str:
    model = audit.model_version.model.name if audit.model_version else audit.model_uri
    return f"is a {audit.status} audit of model {model!r} at layer {audit.layer!r}"
