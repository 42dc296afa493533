"""The dashboard's shared plots, built from plain data (no Streamlit here): severity colours, the
probe, relevance and probability bars (Altair) and the 2-D map of many samples (Plotly, WebGL).
Dropout plots are in `dashboards.dropout_charts`, drift plots in `dashboards.drift_charts`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

SEVERITY_COLOURS = {"high": "red", "medium": "orange", "low": "blue"}
AXES_PX = 90
"""Streamlit draws the plot in the chart's height less its axes: add this much to it."""


def rows_height(rows: int, per_row: int = 36) -> int:
    """Height of a chart of `rows` rows of `per_row` pixels, axes included."""
    return per_row * rows + AXES_PX


def paired_bars(frame: pd.DataFrame, group: str, value: str, colours: list[str]) -> alt.Chart:
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
        .properties(height=rows_height(len(frame)))
    )


def probe_chart(rows: Sequence[Any]) -> alt.Chart:
    """Per probe: flip rate of the probed samples vs the neutral perturbation of equal size
    (`ProbeResultRow`s)."""
    frame = pd.DataFrame(
        [{"probe": r.probe, "variant": r.variant, "flip rate": r.flip_rate} for r in rows]
    ).sort_values(["probe", "variant"], ascending=[True, False])
    return paired_bars(frame, "variant", "flip rate", ["#bbbbbb", "#d62728"])


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
        .properties(height=rows_height(len(frame)))
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
