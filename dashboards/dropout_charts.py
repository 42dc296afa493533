"""Dropout plots: the runs of top-k / random-k / bottom-k channel dropout, their summary and the
dose-response over k.

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

from auditor.evidence import DropoutEffect
from dashboards.charts import rows_height

CONDITIONS = ["top-k", "random-k", "bottom-k"]
CONDITION_COLOURS = ["#d62728", "#7f7f7f", "#1f77b4"]
METRICS = {
    "margin_drop": "share of decision margin lost",
    "flip_rate": "share of predictions flipped",
    "logit_drop": "drop of the predicted logit",
    "accuracy": "accuracy",
}
_STORE_CONDITIONS = {"top_k": "top-k", "random_k": "random-k", "bottom_k": "bottom-k"}
_COLOUR = alt.Scale(domain=CONDITIONS, range=CONDITION_COLOURS)


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
    return (interval + dots + mean).properties(height=rows_height(3, 45))


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
