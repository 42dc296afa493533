"""The dashboard's plots, built from plain data (no Streamlit here): Altair for the statistics,
Plotly (WebGL) for the 2-D maps of many samples.

Dropout evidence comes in one long format, whatever its source (store rows, report, finding
evidence): one row per run with `condition` (top-k, random-k, bottom-k), `repeat`, `metric`
and `value`, and optional `lower` / `upper` bounds of an interval given by the auditor
(bootstrap interval of the top-k effect). `summarise` turns runs into one mean and interval
per condition: the auditor's interval where given, else the range of the runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from auditor.evidence import DropoutEffect
from dashboards.query_results import AlertItem, DriftPoint

CONDITIONS = ["top-k", "random-k", "bottom-k"]
CONDITION_COLOURS = ["#d62728", "#7f7f7f", "#1f77b4"]
METRICS = {
    "margin_drop": "share of decision margin lost",
    "flip_rate": "share of predictions flipped",
    "logit_drop": "drop of the predicted logit",
    "accuracy": "accuracy",
}
SEVERITY_COLOURS = {"high": "red", "medium": "orange", "low": "blue"}
_STORE_CONDITIONS = {"top_k": "top-k", "random_k": "random-k", "bottom_k": "bottom-k"}
_COLOUR = alt.Scale(domain=CONDITIONS, range=CONDITION_COLOURS)
AXES_PX = 90
"""Streamlit draws the plot in the chart's height less its axes: add this much to it."""


def _rows_height(rows: int, per_row: int = 36) -> int:
    return per_row * rows + AXES_PX


def _runs(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["condition", "repeat", "metric", "value", "lower", "upper"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"lower": float, "upper": float})


def _metric_rows(condition: str, repeat: int, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"condition": condition, "repeat": repeat, "metric": m, "value": metrics[m]}
        for m in METRICS
        if metrics.get(m) is not None
    ]


def _with_top_k_interval(frame: pd.DataFrame, statistics: dict[str, Any] | None) -> pd.DataFrame:
    """Bound the top-k margin drop by the bootstrap interval of its effect over random-k."""
    if not statistics or frame.empty:
        return frame
    random = frame[(frame.condition == "random-k") & (frame.metric == "margin_drop")]["value"]
    if random.empty:
        return frame
    rows = (frame.condition == "top-k") & (frame.metric == "margin_drop")
    frame.loc[rows, "lower"] = random.mean() + statistics["ci_low"]
    frame.loc[rows, "upper"] = random.mean() + statistics["ci_high"]
    return frame


def dropout_runs_from_rows(rows: Sequence[Any]) -> pd.DataFrame:
    """Runs from the store's dropout results (`DropoutResultRow`; the baseline is left out)."""
    records = [
        row
        for r in rows
        if r.condition in _STORE_CONDITIONS
        for row in _metric_rows(
            _STORE_CONDITIONS[r.condition],
            r.repeat,
            {m: getattr(r, m) for m in METRICS},
        )
    ]
    return _runs(records)


def dropout_runs_from_section(section: dict[str, Any]) -> pd.DataFrame:
    """Runs from a report's dropout section (`top_k`, `random_k_runs`, `bottom_k`, optional
    `statistics`)."""
    records = [
        *_metric_rows("top-k", 0, section["top_k"]),
        *(
            r
            for i, run in enumerate(section.get("random_k_runs", []))
            for r in _metric_rows("random-k", i, run)
        ),
        *_metric_rows("bottom-k", 0, section["bottom_k"]),
    ]
    return _with_top_k_interval(_runs(records), section.get("statistics"))


def dropout_runs_from_evidence(dropout: DropoutEffect) -> pd.DataFrame:
    """Runs from a finding's dropout summary (`auditor.checks.findings.dropout_effect`): the
    random-k mean, ranging up to its worst set, and top-k / bottom-k."""
    margin = "margin_drop"
    records = [
        {
            "condition": "top-k",
            "repeat": 0,
            "metric": margin,
            "value": dropout.top_k_margin_drop,
        },
        {
            "condition": "random-k",
            "repeat": 0,
            "metric": margin,
            "value": dropout.random_k_margin_drop_mean,
            "upper": dropout.random_k_margin_drop_max,
        },
        {
            "condition": "bottom-k",
            "repeat": 0,
            "metric": margin,
            "value": dropout.bottom_k_margin_drop,
        },
        {
            "condition": "top-k",
            "repeat": 0,
            "metric": "flip_rate",
            "value": dropout.top_k_flip_rate,
        },
        {
            "condition": "random-k",
            "repeat": 0,
            "metric": "flip_rate",
            "value": dropout.random_k_flip_rate_mean,
        },
    ]
    tested = None if dropout.statistics is None else dropout.statistics.model_dump()
    return _with_top_k_interval(_runs(records), tested)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per condition and metric: mean, interval (given, else the runs' range) and run count."""
    grouped = runs.groupby(["condition", "metric"], sort=False)
    out = grouped.agg(
        mean=("value", "mean"),
        low=("value", "min"),
        high=("value", "max"),
        lower=("lower", "min"),
        upper=("upper", "max"),
        runs=("value", "size"),
    ).reset_index()
    out["lower"] = out["lower"].fillna(out["low"])
    out["upper"] = out["upper"].fillna(out["high"])
    return out.drop(columns=["low", "high"])


def dropout_chart(runs: pd.DataFrame, metric: str) -> alt.LayerChart:
    """Top-k vs the random-k distribution vs bottom-k for one metric: every run as a dot, the
    mean as a tick, the interval as a bar."""
    chosen = runs[runs.metric == metric]
    summary = summarise(chosen)
    y = alt.Y("condition:N", sort=CONDITIONS, title=None)
    x_title = METRICS[metric]
    colour = alt.Color("condition:N", scale=_COLOUR, legend=None)
    dots = (
        alt.Chart(chosen)
        .mark_circle(size=60, opacity=0.5)
        .encode(
            x=alt.X("value:Q", title=x_title),
            y=y,
            color=colour,
            tooltip=["condition", "repeat", "value"],
        )
    )
    interval = (
        alt.Chart(summary)
        .mark_rule(strokeWidth=3)
        .encode(x="lower:Q", x2="upper:Q", y=y, color=colour)
    )
    mean = (
        alt.Chart(summary)
        .mark_tick(thickness=3, size=26)
        .encode(
            x="mean:Q", y=y, color=colour, tooltip=["condition", "mean", "lower", "upper", "runs"]
        )
    )
    return (interval + dots + mean).properties(height=_rows_height(3, 45))


def dose_response_frame(section: dict[str, Any], metric: str) -> pd.DataFrame:
    """Per k and condition: the metric from a report's dose-response section (`points` of k,
    `top_k`, `random_k` (the mean over its sets), `random_k_spread` (their standard
    deviation), `bottom_k`); random-k bounded by mean +- one spread."""
    rows = []
    for point in section.get("points", []):
        spread = (point.get("random_k_spread") or {}).get(metric) or 0.0
        for key, condition in _STORE_CONDITIONS.items():
            value = (point.get(key) or {}).get(metric)
            if value is None:
                continue
            width = spread if key == "random_k" else 0.0
            rows.append(
                {
                    "k": point["k"],
                    "condition": condition,
                    "value": value,
                    "lower": value - width,
                    "upper": value + width,
                }
            )
    return pd.DataFrame(rows, columns=["k", "condition", "value", "lower", "upper"])


def dose_response_chart(frame: pd.DataFrame, metric: str) -> alt.LayerChart:
    """The metric over k per condition; random-k with the band of its sets' spread."""
    colour = alt.Color("condition:N", scale=_COLOUR, title=None)
    x = alt.X("k:Q", title="channels dropped (k)")
    band = (
        alt.Chart(frame).mark_area(opacity=0.2).encode(x=x, y="lower:Q", y2="upper:Q", color=colour)
    )
    line = (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("value:Q", title=METRICS[metric]),
            color=colour,
            tooltip=["k", "condition", "value", "lower", "upper"],
        )
    )
    return (band + line).properties(height=220)


def _paired_bars(frame: pd.DataFrame, group: str, value: str, colours: list[str]) -> alt.Chart:
    """Horizontal bars, one row per (probe, `group`) pair, coloured by `group`."""
    frame = frame.assign(row=frame["probe"] + " · " + frame[group].astype(str))
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y("row:N", title=None, sort=None),
            x=alt.X(f"{value}:Q"),
            color=alt.Color(f"{group}:N", scale=alt.Scale(range=colours), legend=None),
            tooltip=["probe", group, value],
        )
        .properties(height=_rows_height(len(frame)))
    )


def probe_chart(rows: Sequence[Any]) -> alt.Chart:
    """Per probe: flip rate of the probed samples vs the neutral perturbation of equal size
    (`ProbeResultRow`s)."""
    frame = pd.DataFrame(
        [{"probe": r.probe, "variant": r.variant, "flip rate": r.flip_rate} for r in rows]
    ).sort_values(["probe", "variant"], ascending=[True, False])
    return _paired_bars(frame, "variant", "flip rate", ["#bbbbbb", "#d62728"])


def relevance_chart(
    relevance: Sequence[float], top_k: Sequence[int], bottom_k: Sequence[int]
) -> alt.Chart:
    """Mean relevance per channel, most relevant first; top-k and bottom-k coloured."""
    top, bottom = set(top_k), set(bottom_k)
    frame = pd.DataFrame(
        {
            "channel": range(len(relevance)),
            "relevance": relevance,
            "set": [
                "top-k" if c in top else "bottom-k" if c in bottom else "other"
                for c in range(len(relevance))
            ],
        }
    )
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("channel:N", sort="-y", axis=alt.Axis(labelAngle=0, labelOverlap=True)),
            y=alt.Y("relevance:Q", title="mean relevance R[c]"),
            color=alt.Color(
                "set:N",
                scale=alt.Scale(
                    domain=["top-k", "other", "bottom-k"], range=["#d62728", "#cccccc", "#1f77b4"]
                ),
                title=None,
            ),
            tooltip=["channel", "relevance", "set"],
        )
        .properties(height=180)
    )


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
    return _paired_bars(frame, "audit", "excess flip rate", ["#1f77b4", "#ff7f0e"])


def probability_chart(classes: Sequence[str], probabilities: Sequence[float]) -> alt.Chart:
    frame = pd.DataFrame({"class": list(classes), "probability": list(probabilities)})
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y("class:N", sort="-x", title=None),
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])),
            tooltip=["class", "probability"],
        )
        .properties(height=_rows_height(len(frame)))
    )


def map_figure(frame: pd.DataFrame, colour: str, selected: Sequence[int] = ()) -> go.Figure:
    """A 2-D map (`x`, `y`, one row per sample) coloured by column `colour`, WebGL-rendered;
    the rows in `selected` ringed."""
    ordered = frame.assign(**{colour: frame[colour].astype(str)}).sort_values(colour, kind="stable")
    figure = px.scatter(
        ordered,
        x="x",
        y="y",
        color=colour,
        hover_data=[c for c in ("id", "set", "label", "predicted", "cluster") if c in frame],
        render_mode="webgl",
        color_discrete_sequence=px.colors.qualitative.D3,
        opacity=0.75,
        height=520,
    )
    if len(selected):
        ring = frame.loc[list(selected)]
        figure.add_trace(
            go.Scattergl(
                x=ring["x"],
                y=ring["y"],
                mode="markers",
                name="selected",
                marker={
                    "size": 11,
                    "color": "rgba(0,0,0,0)",
                    "line": {"width": 1.5, "color": "black"},
                },
            )
        )
    figure.update_layout(margin={"l": 0, "r": 0, "t": 10, "b": 0}, legend_title_text=colour)
    figure.update_xaxes(showticklabels=False, title=None)
    figure.update_yaxes(showticklabels=False, title=None)
    return figure
