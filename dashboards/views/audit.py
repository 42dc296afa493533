"""Audit: every finding of one audit with its evidence (dropout comparison, dose-response,
probes, channel gallery), then the audit-wide channel ranking, dropout validation, probe
table and alerts."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from auditor.results import GalleryResult
from auditor.store import AuditRow, FindingRow
from dashboards import audit_files, charts, data, files, widgets
from dashboards.queries import ReviewFilter

GALLERY_CHANNELS = 6


def class_section(report: dict[str, Any] | None, class_index: int | None) -> dict[str, Any] | None:
    """The report's analysis of one predicted class."""
    for section in (report or {}).get("classes", []):
        if section.get("class_index") == class_index:
            return section
    return None


def dropout_evidence(finding: FindingRow, report: dict[str, Any] | None, metric: str) -> None:
    """Top-k vs random-k vs bottom-k for the finding's class: every run from the report, else
    the summary in the finding's evidence."""
    section = class_section(report, finding.evidence.get("class_index"))
    if section is not None:
        runs = charts.dropout_runs_from_section(section["dropout"])
    else:
        runs = charts.dropout_runs_from_evidence(finding.evidence["dropout"])
        st.caption("summary from the finding (the report with every random-k run is not available)")
    if metric not in set(runs.metric):
        metric = "margin_drop"
    st.altair_chart(charts.dropout_chart(runs, metric), width="stretch")
    dose = finding.evidence.get("dose_response") or (section or {}).get("dose_response")
    dose_response(dose, metric)


def dose_response(section: dict[str, Any] | None, metric: str) -> None:
    """The dropout metric over k, where the audit measured it."""
    if not section:
        return
    frame = charts.dose_response_frame(section, metric)
    if not frame.empty:
        st.markdown("**Dose-response over k**")
        st.altair_chart(charts.dose_response_chart(frame, metric), width="stretch")


def channel_gallery(gallery: GalleryResult | None, channels: list[int]) -> None:
    """For each channel: its top-activating samples with the region of its relevance peak
    outlined, and its channel-conditional heatmaps."""
    if gallery is None:
        st.caption("No channel gallery for this audit (gallery disabled, or pruned by retention).")
        return
    shown = [g for g in gallery.channels if g.channel in set(channels)][:GALLERY_CHANNELS]
    for g in shown:
        ids = ", ".join(e.sample_id for e in g.entries)
        st.markdown(f"**Channel {g.channel}** — top samples by activation: {ids}")
        st.image(
            f"{gallery.directory}/{g.samples_image}",
            caption="input region of the relevance peak outlined",
        )
        st.image(
            f"{gallery.directory}/{g.heatmaps_image}",
            caption="channel-conditional relevance (red +, blue −)",
        )


def probe_evidence(finding: FindingRow, audit: AuditRow) -> None:
    rows = [r for r in audit.probe_results if r.probe == finding.probe]
    if rows:
        st.altair_chart(charts.probe_chart(rows), width="stretch")


def drift_evidence(finding: FindingRow) -> None:
    e = finding.evidence
    low, high = e["no_drift_interval"]
    columns = st.columns(3)
    columns[0].metric(e["statistic"], f"{e['value']:.3f}")
    columns[1].metric("no-drift range", f"{low:.2f} – {high:.2f}")
    columns[2].metric(f"threshold ({e['bound']})", f"{e['threshold']:g}")
    st.page_link("views/drift.py", label="Drift timeline", icon=":material/timeline:")


def subclass_evidence(finding: FindingRow, audit_id: int) -> None:
    e = finding.evidence
    columns = st.columns(4)
    columns[0].metric("production members", e.get("n_production"))
    columns[1].metric("confidence", f"{e.get('confidence', 0):.0%}")
    columns[2].metric(
        "distance ratio", f"{e['distance_ratio']:.2f}" if e.get("distance_ratio") else "–"
    )
    columns[3].metric(
        "profile distance", f"{e['profile_distance']:.2f}" if e.get("profile_distance") else "–"
    )
    st.page_link(
        "views/embeddings.py",
        label="Show the cluster on the map",
        icon=":material/scatter_plot:",
        query_params={"audit": str(audit_id), "cluster": str(e.get("cluster", ""))},
    )


def finding_card(
    finding: FindingRow, audit: AuditRow, report: dict[str, Any] | None, metric: str
) -> None:
    with st.container(border=True):
        header = st.container(horizontal=True)
        with header:
            widgets.severity_badge(finding.severity)
            st.badge(finding.kind.replace("_", " "), color="gray")
        st.markdown(f"**{finding.title}**")
        widgets.verdict_line(verdicts.get(finding.id), finding.id)
        if finding.kind == "spurious_channels":
            left, right = st.columns(2)
            with left:
                dropout_evidence(finding, report, metric)
            with right:
                channel_gallery(audit_files.gallery(url, audit.id), finding.evidence.get("channels", []))
        elif finding.kind == "probe_sensitivity":
            probe_evidence(finding, audit)
        elif finding.kind == "explanation_drift":
            drift_evidence(finding)
        elif finding.kind == "unlabeled_subclass":
            subclass_evidence(finding, audit.id)
        with st.expander("All evidence"):
            st.json(finding.evidence, expanded=False)
        st.page_link(
            "views/review.py",
            label="Review",
            icon=":material/rate_review:",
            query_params={"audit": str(audit.id)},
        )


def probe_table(audit: AuditRow) -> pd.DataFrame:
    rows = []
    for probed in (r for r in audit.probe_results if r.variant == "probed"):
        neutral = next(
            r for r in audit.probe_results if r.probe == probed.probe and r.variant == "neutral"
        )
        randoms = probed.random_k_activation_drops
        random_mean = sum(randoms) / len(randoms) if randoms else None
        rows.append(
            {
                "probe": probed.probe,
                "flip rate": probed.flip_rate,
                "neutral flip rate": neutral.flip_rate,
                "excess": probed.flip_rate - neutral.flip_rate,
                "margin lost": probed.margin_drop,
                "accuracy": probed.accuracy,
                "top-k activation drop": probed.top_k_activation_drop,
                "random-k activation drop": random_mean,
            }
        )
    return pd.DataFrame(rows)


url, audit = widgets.page_audit("Audit", succeeded_only=False)
model = audit.model_version.model.name if audit.model_version else audit.model_uri
st.caption(
    f"model **{model}** · `{audit.model_uri}` · {audit.status} · started {audit.started_at:%Y-%m-%d %H:%M} UTC"
    + (
        f" · layer `{audit.layer}` · {audit.n_samples} samples ({audit.n_labelled} labelled)"
        if audit.layer
        else ""
    )
)
if audit.status == "cancelled":  # stopped on purpose (Ctrl-C, SIGTERM): no results, no error
    st.warning(audit.error or "the audit was cancelled")
    st.stop()
if audit.status != "succeeded":
    st.error(audit.error or f"the audit is {audit.status}")
    st.stop()
if files.pruned(audit):
    st.info(
        f"{len(files.pruned(audit))} artefacts of this audit were pruned by retention; their statistics stay."
    )

report = audit_files.report(url, audit.id)
queue = data.review_queue(
    url, ReviewFilter(audit_id=audit.id), limit=len(audit.findings) + 1, offset=0
)
verdicts = {item.id: item.verdict for item in queue.items}
metric = st.sidebar.radio("Dropout metric", list(charts.METRICS), format_func=charts.METRICS.get)

st.header(f"Findings ({len(audit.findings)})")
if not audit.findings:
    st.success(
        "No findings: the audit found no shortcut, probe sensitivity or drift past its thresholds."
    )
for finding in audit.findings:
    finding_card(finding, audit, report, metric)

st.header("Evidence of the whole audit")
stats = sorted(audit.channel_stats, key=lambda s: s.channel)
st.subheader(f"Channel relevance at {audit.layer}")
st.altair_chart(
    charts.relevance_chart(
        [s.relevance for s in stats],
        [s.channel for s in stats if s.in_top_k],
        [s.channel for s in stats if s.in_bottom_k],
    ),
    width="stretch",
)
st.subheader("Dropout validation: top-k vs random-k vs bottom-k")
st.altair_chart(
    charts.dropout_chart(charts.dropout_runs_from_rows(audit.dropout_results), metric),
    width="stretch",
)
dose_response((report or {}).get("dose_response"), metric)
st.subheader("Probes")
if audit.probe_results:
    st.altair_chart(charts.probe_chart(audit.probe_results), width="stretch")
    st.dataframe(probe_table(audit), hide_index=True, width="stretch")
alerts = data.alerts(url, audit.id)
if alerts:
    st.subheader("Alerts")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "event": a.event,
                    "sink": a.sink,
                    "status": a.status,
                    "severity": a.severity,
                    "title": a.title,
                }
                for a in alerts
            ]
        ),
        hide_index=True,
        width="stretch",
    )
