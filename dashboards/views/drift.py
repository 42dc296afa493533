"""Drift: per model, each explanation statistic over its audits with the no-drift range,
threshold and alert markers; and any two audits side by side (channel ranks, top-k overlap,
probe sensitivities)."""

from __future__ import annotations

from itertools import groupby

import pandas as pd
import streamlit as st

from auditor.store import AuditRow
from dashboards import data, drift_charts, widgets
from dashboards.text import literal


def timeline(model: str) -> None:
    points = data.drift_timeline(url, model)
    if not points:
        st.info(
            "No drift statistics for this model yet: drift is measured from its second audit on."
        )
        return
    alerts = [a for a in data.model_alerts(url, model) if a.event == "drift"]
    by_name = groupby(sorted(points, key=lambda p: (p.name, p.started_at)), key=lambda p: p.name)
    columns = st.columns(2)
    for i, (name, group) in enumerate(by_name):
        with columns[i % 2]:
            st.markdown(f"**{name}**")
            st.altair_chart(drift_charts.drift_chart(list(group), alerts), width="stretch")
    if alerts:
        st.caption(f"{len(alerts)} drift alerts (orange rules); hover for their titles.")


def top_k(audit: AuditRow) -> set[int]:
    return {s.channel for s in audit.channel_stats if s.in_top_k}


def excess_flips(audit: AuditRow, name: str) -> list[dict]:
    flips = {(r.probe, r.variant): r.flip_rate for r in audit.probe_results}
    return [
        {
            "probe": probe,
            "audit": name,
            "excess flip rate": flips[(probe, "probed")] - flips[(probe, "neutral")],
        }
        for probe, variant in flips
        if variant == "probed" and (probe, "neutral") in flips
    ]


def compare(a: AuditRow, b: AuditRow) -> None:
    top_a, top_b = top_k(a), top_k(b)
    union = top_a | top_b
    columns = st.columns(3)
    columns[0].metric(
        "top-k overlap (Jaccard)", f"{len(top_a & top_b) / len(union):.2f}" if union else "–"
    )
    ranks_a = {s.channel: s.rank for s in a.channel_stats}
    ranks_b = {s.channel: s.rank for s in b.channel_stats}
    same_layer = a.layer == b.layer and ranks_a.keys() == ranks_b.keys()
    if same_layer and len(ranks_a) > 1:
        frame = pd.DataFrame({"a": ranks_a, "b": ranks_b})
        columns[1].metric(
            "rank correlation (Spearman)", f"{frame['a'].corr(frame['b'], method='spearman'):.2f}"
        )
    columns[2].metric("top-k channels in both", f"{len(top_a & top_b)} of {len(top_a)}")
    st.caption(
        f"top-k of A only: {sorted(top_a - top_b) or '–'} · of B only: {sorted(top_b - top_a) or '–'} · "
        f"in both: {sorted(top_a & top_b) or '–'}"
    )
    left, right = st.columns(2)
    with left:
        st.markdown("**Channel ranks**")
        if same_layer:
            st.altair_chart(
                drift_charts.rank_scatter(ranks_a, ranks_b, top_a, top_b), width="stretch"
            )
        else:
            st.info(
                f"The audits ranked different layers ({a.layer} vs {b.layer}): ranks do not compare."
            )
    with right:
        st.markdown("**Probe sensitivity** (flip rate minus neutral flip rate)")
        rows = excess_flips(a, f"A #{a.id}") + excess_flips(b, f"B #{b.id}")
        if rows:
            st.altair_chart(drift_charts.probe_compare_chart(rows), width="stretch")


st.title("Drift")
url = data.db_url()
data.open_store(url)
model = widgets.model_picker(url)
if model is None:
    widgets.no_audits()
    st.stop()
st.header(f"Explanation drift of {literal(model)}")
timeline(model)

st.header("Compare two audits")
audits = [a for a in data.recent_audits(url) if a.status == "succeeded"]
pick_a, pick_b = st.columns(2)
with pick_a:
    chosen_a = widgets.audit_picker("Audit A", audits, param="a", default=1)
with pick_b:
    chosen_b = widgets.audit_picker("Audit B", audits, param="b", default=0)
if chosen_a is not None and chosen_b is not None:
    compare(data.audit(url, chosen_a.id), data.audit(url, chosen_b.id))
