"""Embeddings: the audit's stored 2-D map of its samples, coloured by cluster, prediction,
label, sample set or finding; a selected cluster shows its statistics, its members and the
reference samples nearest to it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from auditor.checks.neighbours import build_index, search
from auditor.errors import AuditorError
from auditor.store import AuditRow
from dashboards import audit_files, charts, widgets
from dashboards.files import EmbeddingFiles
from dashboards.text import literal

SHOWN = 12
STATISTICS = {
    "reference_share": "reference share",
    "prediction_share": "predicted as one class",
    "confidence": "mean confidence",
    "error_rate": "error rate (labelled)",
    "distance_ratio": "distance ratio",
    "profile_distance": "relevance profile distance",
}


def finding_members(audit: AuditRow) -> dict[int, list[str]]:
    """Per cluster, the member ids an `unlabeled_subclass` finding lists."""
    subclasses = [f.typed_evidence for f in audit.findings if f.kind == "unlabeled_subclass"]
    return {e.cluster: e.members for e in subclasses}


def sample_frame(stored: EmbeddingFiles, method: str, audit: AuditRow) -> pd.DataFrame:
    """One row per mapped sample: coordinates and what it can be coloured by."""
    space = stored.space
    chosen = next(m for m in stored.maps if m.method == method)
    rows = chosen.rows
    flagged = {i: f"cluster {c}" for c, ids in finding_members(audit).items() for i in ids}
    frame = pd.DataFrame(
        {
            "row": rows,
            "x": chosen.coords[:, 0],
            "y": chosen.coords[:, 1],
            "id": [space.ids[i] for i in rows],
            "set": [space.sets[i] for i in rows],
            "role": [space.roles[i] for i in rows],
            "label": [space.class_name(int(space.labels[i])) for i in rows],
            "predicted": [space.class_name(int(space.predicted[i])) for i in rows],
            "finding": [flagged.get(space.ids[i], "none") for i in rows],
        }
    )
    if stored.clusters is not None:
        frame["cluster"] = stored.clusters[rows]
    return frame


def members(stored: EmbeddingFiles, audit: AuditRow, cluster: int) -> np.ndarray:
    """Rows of the cluster's members: from the stored assignment, else the finding's list."""
    if stored.clusters is not None:
        return np.flatnonzero(stored.clusters == cluster)
    ids = set(finding_members(audit).get(cluster, []))
    return np.array(
        [i for i, sample_id in enumerate(stored.space.ids) if sample_id in ids], dtype=np.int64
    )


def nearest_references(stored: EmbeddingFiles, rows: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The reference samples nearest to the centroid of `rows` (exact search)."""
    vectors = stored.space.prepared()
    reference = np.flatnonzero(np.array(stored.space.roles) == "reference")
    if not len(reference) or not len(rows):
        return []
    found = search(
        build_index(vectors[reference], "flat"), vectors[rows].mean(axis=0, keepdims=True), k
    )
    return [
        (int(reference[i]), float(d))
        for i, d in zip(found.indices[0], found.distances[0])
        if i >= 0
    ]


def sample_images(
    audit: AuditRow, stored: EmbeddingFiles, rows: list[int], captions: list[str]
) -> None:
    """Thumbnails of rows of the embedding space (their ids looked up in the audit's samples),
    or their ids when the samples cannot be loaded."""
    ids = [stored.space.ids[i] for i in rows]
    try:
        model = audit_files.audited_model(audit.id, audit.config_yaml)
    except AuditorError as err:
        st.caption(literal(f"samples not loadable ({err}): {', '.join(ids)}"))
        return
    where = {sample_id: i for i, sample_id in enumerate(model.samples.ids)}
    widgets.thumbnails(
        [model.samples.images[where[i]] for i in ids if i in where], captions, per_row=SHOWN // 2
    )


def cluster_details(stored: EmbeddingFiles, audit: AuditRow, cluster: int) -> None:
    row = next(c for c in audit.clusters if c.cluster == cluster)
    evidence = row.evidence
    columns = st.columns(len(STATISTICS) + 1)
    columns[0].metric("members", f"{row.size} ({row.share:.0%})")
    for column, (key, label) in zip(columns[1:], STATISTICS.items()):
        value = evidence.get(key)
        column.metric(label, "–" if value is None else f"{value:.2f}")
    st.caption(literal(f"predictions: {evidence.get('predictions', {})}"))
    profile = row.relevance_profile
    top = sorted(range(len(profile)), key=lambda c: -profile[c])[: max(1, len(profile) // 10)]
    st.markdown("**Mean channel relevance of its members**")
    st.altair_chart(charts.relevance_chart(profile, top, []), width="stretch")
    rows = members(stored, audit, cluster)
    if not len(rows):
        st.caption(
            "Its members are not stored: only an unlabeled_subclass finding lists the members of its cluster."
        )
        return
    space = stored.space
    st.markdown(f"**Members** (first {min(SHOWN, len(rows))} of {len(rows)})")
    shown = rows[:SHOWN].tolist()
    sample_images(
        audit,
        stored,
        shown,
        [f"{space.ids[i]} · pred {space.class_name(int(space.predicted[i]))}" for i in shown],
    )
    st.markdown("**Nearest reference samples** (to the cluster's centroid)")
    hits = nearest_references(stored, rows, SHOWN // 2)
    if not hits:
        st.caption("no reference samples in this audit (samples[].role: reference)")
        return
    sample_images(
        audit,
        stored,
        [i for i, _ in hits],
        [
            f"{space.ids[i]} · label {space.class_name(int(space.labels[i]))} · d={d:.3f}"
            for i, d in hits
        ],
    )


url, audit = widgets.page_audit("Embeddings", succeeded_only=True)
stored = audit_files.embedding_files(url, audit.id)
if stored is None or not stored.maps:
    st.info(
        "This audit stored no embeddings or maps (subclasses disabled, files pruned, or audited before they existed)."
    )
    st.stop()

options = st.columns(3)
method = options[0].selectbox("Map", [m.method for m in stored.maps], format_func=str.upper)
frame = sample_frame(stored, method, audit)
colours = [c for c in ("cluster", "predicted", "label", "finding", "set", "role") if c in frame]
colour = options[1].selectbox("Colour by", colours)
clusters = [c.cluster for c in audit.clusters]
wanted = widgets.query_int("cluster")
cluster = options[2].selectbox(
    "Cluster",
    clusters,
    index=clusters.index(wanted) if wanted in clusters else None,
    placeholder="select a cluster",
)
if cluster is not None:
    st.query_params["cluster"] = str(cluster)
selected = (
    frame.index[frame["row"].isin(members(stored, audit, cluster))] if cluster is not None else []
)
st.plotly_chart(charts.map_figure(frame, colour, selected), width="stretch")
st.caption(
    f"{len(frame)} of {len(stored.space.ids)} samples mapped; embedding at {stored.space.layer} ({stored.space.metric})."
)
if cluster is not None:
    st.subheader(f"Cluster {cluster}")
    cluster_details(stored, audit, cluster)
