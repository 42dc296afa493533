"""Cached reads of what an audit left besides its rows (its report, gallery and embedding
files) and of its model, for the audit, sample explorer and embedding pages; the store's rows
are read by `dashboards.data`, which loads none of torch, MLflow and FAISS."""

from __future__ import annotations

import streamlit as st

from auditor.results import GalleryResult
from dashboards import files, inference
from dashboards.data import TTL_S, audit


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=32)
def report(url: str, audit_id: int) -> dict | None:
    """The audit's JSON report, when its file is still there."""
    return files.read_report(audit(url, audit_id))


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=32)
def gallery(url: str, audit_id: int) -> GalleryResult | None:
    return files.find_gallery(audit(url, audit_id))


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=8)
def embedding_files(url: str, audit_id: int) -> files.EmbeddingFiles | None:
    return files.find_embeddings(audit(url, audit_id))


@st.cache_resource(max_entries=2, show_spinner="Loading the audited model and its samples ...")
def audited_model(audit_id: int, config_yaml: str) -> inference.AuditedModel:
    """The audit's model and samples, loaded once per audit (the two newest are kept)."""
    return inference.load_audited(config_yaml)
