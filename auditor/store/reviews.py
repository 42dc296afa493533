"""Domain experts' reviews of findings, and the false alarms they carry over to later audits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from sqlalchemy import select

from auditor.errors import StoreError
from auditor.store.connection import StoreConnection
from auditor.store.schema import FindingRow, ReviewRow, ReviewStatus


class FindingReviews(StoreConnection):
    """Verdicts on findings: add one, list them, and the fingerprints judged false alarms."""

    def add_review(
        self, finding_id: int, status: ReviewStatus, reviewer: str, comment: str | None = None
    ) -> ReviewRow:
        """Record a domain expert's verdict on a finding (the newest one counts)."""
        allowed = get_args(ReviewStatus)
        if status not in allowed:
            raise StoreError(f"review status {status!r} is unknown", f"use one of {allowed}")
        if not reviewer.strip():
            raise StoreError("a review needs a reviewer", "pass the reviewer's name")
        review = ReviewRow(finding_id=finding_id, status=status, reviewer=reviewer, comment=comment)
        with self.transaction() as session:
            if session.get(FindingRow, finding_id) is None:
                raise StoreError(
                    f"finding {finding_id} does not exist in database {self._display_url}",
                    "review a finding of a stored audit",
                )
            session.add(review)
        return review

    def reviews(self, finding_id: int) -> list[ReviewRow]:
        """The reviews of one finding, oldest first."""
        query = select(ReviewRow).where(ReviewRow.finding_id == finding_id).order_by(ReviewRow.id)
        with self.transaction(write=False) as session:
            return list(session.scalars(query))

    def false_alarms(self, fingerprints: Iterable[str]) -> set[str]:
        """The fingerprints whose newest review, over every finding with that fingerprint in
        any audit, says `false_alarm` (the expert's verdict carries over to later audits)."""
        wanted = set(fingerprints)
        if not wanted:
            return set()
        query = (
            select(FindingRow.fingerprint, ReviewRow.status)
            .join(ReviewRow, ReviewRow.finding_id == FindingRow.id)
            .where(FindingRow.fingerprint.in_(wanted))
            .order_by(ReviewRow.created_at, ReviewRow.id)
        )
        with self.transaction(write=False) as session:
            newest = dict(session.execute(query).tuples().all())
        return {fingerprint for fingerprint, status in newest.items() if status == "false_alarm"}
