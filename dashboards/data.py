"""Cached reads of the findings store for the pages, keyed on the database URL (the files and
the model of an audit: `dashboards.audit_files`).

The URL is the auditor's (`AUDITOR_DB_URL`, else the SQLite file under `.auditor/`;
`auditor dashboard --db URL` sets the variable). One `AuditStore` per URL is shared by all
sessions (`st.cache_resource`); query results are cached for `TTL_S` seconds
(`st.cache_data`), so a page rerun does not query again, and a new audit shows up within that
time. Writing a review clears the caches.
"""

from __future__ import annotations

import streamlit as st

from auditor.config.locations import default_store_url
from auditor.errors import AuditorError
from auditor.store import AlertRow, AuditRow, AuditStore
from dashboards import queries, review_queries
from dashboards.query_results import (
    AlertItem,
    AuditSummary,
    DriftPoint,
    ModelCard,
    ReviewFilter,
    ReviewPage,
)
from dashboards.text import literal

TTL_S = 30


def db_url() -> str:
    """The database the dashboard reads: the auditor's default store URL."""
    return default_store_url()


@st.cache_resource(show_spinner=False)
def store(url: str) -> AuditStore:
    """One store (connection pool) per database URL; the schema must be current."""
    return AuditStore(url, create=False)


def open_store(url: str) -> AuditStore:
    """The store, or a one-line error on the page (and the page stops) when it cannot open."""
    try:
        return store(url)
    except AuditorError as err:
        st.error(f"Cannot open the findings database: {literal(err)}")
        st.stop()
        raise


@st.cache_data(ttl=TTL_S, show_spinner=False)
def model_cards(url: str) -> list[ModelCard]:
    return queries.model_cards(store(url))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def recent_audits(
    url: str, model: str | None = None, limit: int = 200
) -> list[AuditSummary]:
    return queries.recent_audits(store(url), limit=limit, model=model)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def model_names(url: str) -> list[str]:
    return queries.model_names(store(url))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def finding_kinds(url: str) -> list[str]:
    return queries.finding_kinds(store(url))


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=64)
def audit(url: str, audit_id: int) -> AuditRow:
    """One audit with every result row (findings with their reviews and artefacts)."""
    return store(url).get_audit(audit_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def alerts(url: str, audit_id: int) -> list[AlertRow]:
    return store(url).alerts(audit_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def drift_timeline(url: str, model: str) -> list[DriftPoint]:
    return queries.drift_timeline(store(url), model)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def model_alerts(url: str, model: str) -> list[AlertItem]:
    return queries.model_alerts(store(url), model)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def review_queue(
    url: str, flt: ReviewFilter, limit: int, offset: int
) -> ReviewPage:
    return review_queries.review_queue(store(url), flt, limit=limit, offset=offset)


def add_review(url: str, finding_id: int, status: str, reviewer: str, comment: str) -> None:
    """Store a verdict, then drop every cached query so that all pages show it."""
    store(url).add_review(finding_id, status, reviewer, comment.strip() or None)  # type: ignore[arg-type]
    st.cache_data.clear()
