"""Drift plots: one statistic over audits (sparkline, drift chart with alerts) and the
comparison of two audits (channel-rank scatter, probe excess flip rates)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd

from dashboards.charts import AXES_PX, paired_bars
from dashboards.query_results import AlertItem, DriftPoint


def _drift_frame(points: Sequence[DriftPoint]) -> pd.DataFrame:
    frame = pd.DataFrame([p.__dict__ for p in points])
    frame["audit"] = "#" + frame["audit_id"].astype(str)
    return frame


def sparkline(points: Sequence[DriftPoint]) -> alt.LayerChart:
    """One drift statistic over audits, its threshold dashed, drifted audits red."""
    frame = _drift_frame(points)
    x = alt.X("started_at:T", axis=None)
    y = alt.Y("value:Q", axis=None, scale=alt.Scale(zero=False))
    line = alt.Chart(frame).mark_line(color="#555").encode(x=x, y=y)
    dots = (
        alt.Chart(frame)
        .mark_circle(size=30)
        .encode(
            x=x,
            y=y,
            color=alt.condition("datum.drifted", alt.value("#d62728"), alt.value("#555")),
            tooltip=["audit", "value", "threshold", "drifted"],
        )
    )
    threshold = (
        alt.Chart(frame).mark_rule(strokeDash=[3, 3], color="#d62728").encode(y="mean(threshold):Q")
    )
    return (line + dots + threshold).properties(height=70 + AXES_PX)


def drift_chart(points: Sequence[DriftPoint], alerts: Sequence[AlertItem]) -> alt.LayerChart:
    """One statistic over audits: its value, the no-drift range as a band, the threshold
    dashed, drifted audits red, and the model's alerts as vertical rules."""
    frame = _drift_frame(points)
    x = alt.X(
        "started_at:T",
        title="audit started",
        axis=alt.Axis(format="%b %d %H:%M", labelAngle=0, tickCount=5),
    )
    band = (
        alt.Chart(frame)
        .mark_area(opacity=0.2, color="#1f77b4")
        .encode(x=x, y="lower:Q", y2="upper:Q")
    )
    line = (
        alt.Chart(frame)
        .mark_line(color="#333")
        .encode(x=x, y=alt.Y("value:Q", title=points[0].name, scale=alt.Scale(zero=False)))
    )
    dots = (
        alt.Chart(frame)
        .mark_circle(size=70)
        .encode(
            x=x,
            y="value:Q",
            color=alt.condition("datum.drifted", alt.value("#d62728"), alt.value("#333")),
            tooltip=["audit", "value", "lower", "upper", "threshold", "drifted"],
        )
    )
    threshold = (
        alt.Chart(frame).mark_line(strokeDash=[5, 4], color="#d62728").encode(x=x, y="threshold:Q")
    )
    layers = band + line + threshold + dots
    if alerts:
        marks = pd.DataFrame(
            [
                {"created_at": a.created_at, "alert": a.title, "status": a.status, "sink": a.sink}
                for a in alerts
            ]
        )
        layers += (
            alt.Chart(marks)
            .mark_rule(color="#ff7f0e", strokeWidth=2)
            .encode(x="created_at:T", tooltip=["alert", "status", "sink"])
        )
    return layers.properties(height=200)


def rank_scatter(
    a: dict[int, int], b: dict[int, int], top_a: set[int], top_b: set[int]
) -> alt.Chart:
    """Rank of each channel in audit A vs audit B; top-k membership coloured."""
    channels = sorted(a.keys() & b.keys())
    frame = pd.DataFrame(
        {
            "channel": channels,
            "rank A": [a[c] for c in channels],
            "rank B": [b[c] for c in channels],
            "top-k": [
                "both"
                if c in top_a and c in top_b
                else "A only"
                if c in top_a
                else "B only"
                if c in top_b
                else "neither"
                for c in channels
            ],
        }
    )
    return (
        alt.Chart(frame)
        .mark_circle(size=70)
        .encode(
            x="rank A:Q",
            y="rank B:Q",
            color=alt.Color(
                "top-k:N",
                scale=alt.Scale(
                    domain=["both", "A only", "B only", "neither"],
                    range=["#d62728", "#ff7f0e", "#9467bd", "#cccccc"],
                ),
            ),
            tooltip=["channel", "rank A", "rank B", "top-k"],
        )
        .properties(height=300)
    )


def probe_compare_chart(rows: list[dict[str, Any]]) -> alt.Chart:
    """Excess flip rate (probed minus neutral) per probe, audit A beside audit B."""
    frame = pd.DataFrame(rows, columns=["probe", "audit", "excess flip rate"])
    return paired_bars(frame, "audit", "excess flip rate", ["#1f77b4", "#ff7f0e"])
