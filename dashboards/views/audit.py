"""Audit: every finding of one audit with its evidence (dropout comparison, dose-response,
probes, channel gallery), then the audit-wide channel ranking, dropout validation, probe
table and alerts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from auditor.store import AuditRow, FindingRow
from dashboards import audit_files, charts, data, dropout_charts, files, widgets
from dashboards.findings import FindingContext, dose_response, render_evidence
from dashboards.query_results import ReviewFilter, Verdict
from dashboards.text import literal


def explanation_line(finding: FindingRow) -> None:
    """Why a supporting finding belongs to its verdict."""
    e = finding.explanation
    if e is None:
        st.caption("the same cue, seen by another check")
        return
    st.caption(literal(
        f"explained by {e['explained_by']}: with it occluded this probe flips "
        f"{e['occluded_flip_rate']:.0%} of predictions instead of {e['flip_rate']:.0%} "
        f"({e['vanished']} flips vanish, {e['appeared']} appear; McNemar p = {e['p_value']:.2g})"
    ))


def finding_card(
    finding: FindingRow,
    verdict: Verdict | None,
    context: FindingContext,
    supporting: list[FindingRow] = (),
) -> None:
    """One verdict: its heading finding (severity, kind, title, its review verdict, its kind's
    evidence, a link to review), then each supporting finding with why it supports it."""
    with st.container(border=True):
        header = st.container(horizontal=True)
        with header:
            widgets.severity_badge(finding.severity)
            st.badge(finding.kind.replace("_", " "), color="gray")
        st.markdown(f"**{literal(finding.title)}**")
        widgets.verdict_line(verdict, finding.id)
        render_evidence(finding, context)
        if supporting:
            st.markdown(f"**Supporting evidence ({len(supporting)} findings)**")
        for support in supporting:
            with st.container(border=True):
                with st.container(horizontal=True):
                    widgets.severity_badge(support.severity)
                    st.badge(support.kind.replace("_", " "), color="gray")
                st.markdown(literal(support.title))
                explanation_line(support)
                render_evidence(support, context)
        st.page_link(
            "views/review.py",
            label="Review",
            icon=":material/rate_review:",
            query_params={"audit": str(context.audit.id)},
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
    f"model **{literal(model)}** · {literal(audit.model_uri)} · {audit.status} · started {audit.started_at:%Y-%m-%d %H:%M} UTC"
    + (
        f" · layer {literal(audit.layer)} · {audit.n_samples} samples ({audit.n_labelled} labelled)"
        if audit.layer
        else ""
    )
)
if audit.status == "cancelled":  # stopped on purpose (Ctrl-C, SIGTERM): no results, no error
    st.warning(literal(audit.error or "the audit was cancelled"))
    st.stop()
if audit.status != "succeeded":
    st.error(literal(audit.error or f"the audit is {audit.status}"))
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
metric = st.sidebar.radio(
    "Dropout metric", list(dropout_charts.METRICS), format_func=dropout_charts.METRICS.get
)

heads = [f for f in audit.findings if f.supports_id is None]
st.header(f"Verdicts ({len(heads)}) from {len(audit.findings)} findings")
if not audit.findings:
    st.success(
        "No findings: the audit found no shortcut, probe sensitivity or drift past its thresholds."
    )
context = FindingContext(url, audit, report, metric)
for finding in heads:
    supporting = [f for f in audit.findings if f.supports_id == finding.id]
    finding_card(finding, verdicts.get(finding.id), context, supporting)

st.header("Evidence of the whole audit")
stats = sorted(audit.channel_stats, key=lambda s: s.channel)
st.subheader(f"Channel relevance at {literal(audit.layer)}")
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
    dropout_charts.dropout_chart(
        dropout_charts.dropout_runs_from_rows(audit.dropout_results), metric
    ),
    width="stretch",
)
dose_response((report or {}).get("dose_response"), metric, "Dose-response over k")
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
