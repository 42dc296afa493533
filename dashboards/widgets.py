"""Page elements used on several pages: the audit and model pickers (kept in the URL, so a
view can be shared), severity and verdict badges, images with heatmaps, thumbnail grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st
from PIL import Image

from auditor.artefacts.gallery_files import diverging
from auditor.store import AuditRow
from dashboards import data
from dashboards.charts import SEVERITY_COLOURS
from dashboards.query_results import AuditSummary, Verdict
from dashboards.text import literal

VERDICT_LABELS = {
    "confirmed": "confirmed",
    "false_alarm": "false alarm",
    "needs_data": "needs data",
}
VERDICT_COLOURS = {"confirmed": "red", "false_alarm": "green", "needs_data": "yellow"}
DISPLAY_EDGE = 256


def query_int(name: str) -> int | None:
    value = st.query_params.get(name)
    return int(value) if value is not None and value.isdigit() else None


def audit_picker(
    label: str, audits: Sequence[AuditSummary], *, param: str = "audit", default: int = 0
) -> AuditSummary | None:
    """Pick one of `audits` (newest first); the choice is kept in the URL as `?<param>=id`,
    and an id given there is preselected."""
    if not audits:
        return None
    ids = [a.id for a in audits]
    wanted = query_int(param)
    index = ids.index(wanted) if wanted in ids else min(default, len(ids) - 1)
    chosen = st.selectbox(
        label, audits, index=index, format_func=lambda a: a.label, key=f"pick_{param}"
    )
    st.query_params[param] = str(chosen.id)
    return chosen


def model_picker(url: str, label: str = "Model") -> str | None:
    """Pick a registered model; kept in the URL as `?model=name`."""
    names = data.model_names(url)
    if not names:
        return None
    wanted = st.query_params.get("model")
    chosen = st.selectbox(label, names, index=names.index(wanted) if wanted in names else 0)
    st.query_params["model"] = chosen
    return chosen


def severity_badge(severity: str, label: str | None = None) -> None:
    """A badge in the severity's colour, reading `label` (default: the severity)."""
    st.badge(label or severity, color=SEVERITY_COLOURS.get(severity, "gray"))  # type: ignore[arg-type]


def verdict_line(verdict: Verdict | None, finding_id: int) -> None:
    """The verdict a finding carries: by whom and when, and from which audit if carried over."""
    if verdict is None:
        st.caption("Not reviewed yet.")
        return
    where = (
        ""
        if verdict.finding_id == finding_id
        else f" on the same finding in audit #{verdict.audit_id}"
    )
    comment = f" — “{literal(verdict.comment)}”" if verdict.comment else ""
    st.badge(VERDICT_LABELS[verdict.status], color=VERDICT_COLOURS[verdict.status])  # type: ignore[arg-type]
    st.caption(f"by {literal(verdict.reviewer)}, {verdict.created_at:%Y-%m-%d %H:%M} UTC{where}{comment}")


def display_image(image: np.ndarray, heatmap: np.ndarray | None = None) -> np.ndarray:
    """An image (3 x H x W in [0, 1]) as H x W x 3 uint8, upscaled (nearest) to a visible size;
    with `heatmap` (H x W): red/blue relevance over its luminance, as in the galleries."""
    rgb = image.transpose(1, 2, 0) if heatmap is None else diverging(heatmap, image)
    pixels = np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    scale = max(1, DISPLAY_EDGE // max(pixels.shape[:2]))
    size = (pixels.shape[1] * scale, pixels.shape[0] * scale)
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST))


def thumbnails(images: Sequence[np.ndarray], captions: Sequence[str], per_row: int = 6) -> None:
    """Images (3 x H x W in [0, 1]) in a grid with a caption each (shown as written)."""
    for start in range(0, len(images), per_row):
        columns = st.columns(per_row)
        for column, image, caption in zip(
            columns, images[start : start + per_row], captions[start : start + per_row]
        ):
            column.image(display_image(image), caption=literal(caption), width="stretch")


def page_audit(title: str, *, succeeded_only: bool) -> tuple[str, AuditRow]:
    """The head of a one-audit page: its title, the database URL and the audit picked (the page
    stops with a hint when there is none)."""
    st.title(title)
    url = data.db_url()
    data.open_store(url)
    audits = data.recent_audits(url)
    if succeeded_only:
        audits = [a for a in audits if a.status == "succeeded"]
    chosen = audit_picker("Audit", audits)
    if chosen is None:
        no_audits()
        st.stop()
    return url, data.audit(url, chosen.id)


def no_audits() -> None:
    st.info("No audits in the findings database yet. Run `auditor audit --config audit.yaml`.")
