"""Overview: the watched models, each with its version, last audit, open findings by
severity, active alerts and the main drift statistic; then the newest audits."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import data, drift_charts, widgets
from dashboards.query_results import MAIN_DRIFT_STATISTIC, SEVERITIES, ModelCard
from dashboards.text import literal

STATUS_ICONS = {
    "succeeded": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
    "running": ":material/pending:",
}
ERROR_COLOURS = {"failed": "red", "cancelled": "orange"}  # the error (or reason) shown


def model_card(card: ModelCard) -> None:
    latest = card.latest
    with st.container(border=True):
        st.subheader(literal(card.name))
        version = latest.version if latest.version != latest.model_uri else "local model"
        alias = f" · alias **@{literal(latest.alias)}**" if latest.alias else ""
        st.caption(f"version **{literal(version)}**{alias} · {literal(latest.model_uri)}")
        left, middle, right = st.columns([2, 3, 3])
        with left:
            st.markdown(
                f"{STATUS_ICONS.get(latest.status, '')} last audit **#{latest.id}** {latest.status}"
            )
            st.caption(f"{latest.started_at:%Y-%m-%d %H:%M} UTC")
            st.page_link(
                "views/audit.py", label="Open audit", query_params={"audit": str(latest.id)}
            )
            if latest.status in ERROR_COLOURS and latest.error:
                st.caption(f":{ERROR_COLOURS[latest.status]}[{literal(latest.error)}]")
        with middle:
            total = sum(card.open_findings.values())
            st.metric(
                "open findings",
                total,
                help="findings of the last succeeded audit not dismissed as false alarms",
            )
            badges = st.container(horizontal=True)
            with badges:
                for severity in SEVERITIES:
                    if card.open_findings.get(severity):
                        widgets.severity_badge(
                            severity, f"{card.open_findings[severity]} {severity}"
                        )
            st.caption(
                f"{card.to_review} to review · {card.active_alerts} alerts sent for the last audit",
                help="alerts suppressed as repeats (cooldown) or as reviewed false alarms are not counted",
            )
        with right:
            if card.drift:
                last = card.drift[-1]
                st.caption(
                    f"{MAIN_DRIFT_STATISTIC} vs baseline: **{last.value:.2f}** (threshold {last.threshold:g})"
                )
                st.altair_chart(drift_charts.sparkline(card.drift), width="stretch")
            else:
                st.caption("no drift statistics yet (needs a baseline audit)")


st.title("Overview")
url = data.db_url()
data.open_store(url)
cards = data.model_cards(url)
if not cards:
    widgets.no_audits()
    st.stop()
for card in cards:
    model_card(card)

st.subheader("Newest audits")
audits = data.recent_audits(url, limit=20)
st.dataframe(
    pd.DataFrame(
        [
            {
                "audit": f"/audit?audit={a.id}",
                "model": a.model or a.model_uri,
                "version": a.version,
                "status": a.status,
                "started (UTC)": a.started_at,
                "layer": a.layer,
                "error": a.error,
            }
            for a in audits
        ]
    ),
    column_config={"audit": st.column_config.LinkColumn("audit", display_text=r"audit=(\d+)")},
    hide_index=True,
    width="stretch",
)
