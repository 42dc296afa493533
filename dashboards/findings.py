"""Finding renderers: per finding kind, what the audit page shows of a finding's evidence.

`FINDING_RENDERERS` maps a finding kind (`auditor.evidence.FINDING_KINDS`) to a function
`render(finding, evidence, context)` that draws into the current Streamlit container;
`evidence` is the stored evidence read back through the kind's model. A plug-in that adds a
finding kind adds its renderer under the entry point group `relevance_auditor.finding_renderers`
with the kind's name (see README, "How to add a finding kind").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from auditor.evidence import (
    CounterfactualEvidence,
    ExplanationDriftEvidence,
    FindingEvidence,
    NovelClusterEvidence,
    ProbeSensitivityEvidence,
    SpuriousChannelsEvidence,
    UnlabeledSubclassEvidence,
)
from auditor.registry import Registry
from auditor.results import GalleryResult
from auditor.store import AuditRow, FindingRow
from dashboards import audit_files, charts, dropout_charts
from dashboards.text import literal

GALLERY_CHANNELS = 6


@dataclass(frozen=True)
class FindingContext:
    """What a renderer may show beside a finding: the store at `url`, the finding's audit, the
    audit's JSON report (None when its file is gone) and the dropout metric chosen."""

    url: str
    audit: AuditRow
    report: dict[str, Any] | None
    metric: str


FindingRenderer = Callable[[FindingRow, Any, FindingContext], None]


def _check_renderer(name: str, render: FindingRenderer) -> None:
    if not callable(render):
        raise TypeError(f"finding renderer '{name}' is not callable")


FINDING_RENDERERS: Registry[FindingRenderer] = Registry(
    "finding renderer", "relevance_auditor.finding_renderers", validate=_check_renderer
)


def render_evidence(finding: FindingRow, context: FindingContext) -> None:
    """The finding's renderer, then all of its evidence as JSON. A kind that is not installed
    (a plug-in removed since the audit) or has no renderer shows its JSON only."""
    if finding.kind in FINDING_RENDERERS:
        evidence: FindingEvidence = finding.typed_evidence
        FINDING_RENDERERS.get(finding.kind)(finding, evidence, context)
    with st.expander("All evidence"):
        st.json(finding.evidence, expanded=False)


def class_section(report: dict[str, Any] | None, class_index: int) -> dict[str, Any] | None:
    """The report's analysis of one predicted class."""
    for section in (report or {}).get("classes", []):
        if section.get("class_index") == class_index:
            return section
    return None


def dose_response(section: dict[str, Any] | None, metric: str, title: str) -> None:
    """The dropout metric over k (the report's `dose_response`), where the audit measured it."""
    if not section:
        return
    frame = dropout_charts.dose_response_frame(section, metric)
    if not frame.empty:
        st.markdown(f"**{title}**")
        st.altair_chart(dropout_charts.dose_response_chart(frame, metric), width="stretch")


def dropout_evidence(evidence: SpuriousChannelsEvidence, context: FindingContext) -> None:
    """Top-k vs random-k vs bottom-k for the finding's class (every run from the report, else
    the summary in the evidence), then the audit's dose-response over k."""
    section = class_section(context.report, evidence.class_index)
    if section is not None:
        runs = dropout_charts.dropout_runs_from_section(section["dropout"])
    else:
        runs = dropout_charts.dropout_runs_from_evidence(evidence.dropout)
        st.caption("summary from the finding (the report with every random-k run is not available)")
    metric = context.metric if context.metric in set(runs.metric) else "margin_drop"
    st.altair_chart(dropout_charts.dropout_chart(runs, metric), width="stretch")
    dose_response(
        (context.report or {}).get("dose_response"),
        metric,
        "Dose-response over k (the audit's channel ranking, all samples)",
    )


def channel_gallery(gallery: GalleryResult | None, channels: list[int]) -> None:
    """For each channel: its top-activating samples with the region of its relevance peak
    outlined, and its channel-conditional heatmaps."""
    if gallery is None:
        st.caption("No channel gallery for this audit (gallery disabled, or pruned by retention).")
        return
    shown = [g for g in gallery.channels if g.channel in set(channels)][:GALLERY_CHANNELS]
    for g in shown:
        ids = literal(", ".join(e.sample_id for e in g.entries))
        st.markdown(f"**Channel {g.channel}** — top samples by activation: {ids}")
        st.image(
            f"{gallery.directory}/{g.samples_image}",
            caption="input region of the relevance peak outlined",
        )
        st.image(
            f"{gallery.directory}/{g.heatmaps_image}",
            caption="channel-conditional relevance (red +, blue −)",
        )


CONTROLS = {
    "random_region": "the same donor's region of the same size elsewhere",
    "same_class_donor": "the transplant from a donor of the recipient's own class",
}


def counterfactual(evidence: CounterfactualEvidence, class_name: str) -> None:
    """The cue transplanted into samples of other classes: flip rate against its control."""
    columns = st.columns(3)
    columns[0].metric(f"cue transplanted: moved to '{literal(class_name)}'", f"{evidence.flip_rate:.0%}",
                      f"{evidence.n_recipients} recipients", delta_color="off")
    columns[1].metric("control", f"{evidence.control_flip_rate:.0%}",
                      CONTROLS[evidence.control], delta_color="off")
    columns[2].metric("McNemar p", f"{evidence.p_value:.2g}",
                      "confirmed" if evidence.confirmed else "not confirmed", delta_color="off")
    st.caption(literal(
        f"{evidence.cue_only} recipients moved by the cue only, {evidence.control_only} by the "
        f"control only; confirmed at p <= {evidence.alpha:g}"
    ))


@FINDING_RENDERERS.register("spurious_channels")
def spurious_channels(
    finding: FindingRow, evidence: SpuriousChannelsEvidence, context: FindingContext
) -> None:
    if evidence.counterfactual is not None:
        counterfactual(evidence.counterfactual, evidence.class_name)
    left, right = st.columns(2)
    with left:
        dropout_evidence(evidence, context)
    with right:
        channel_gallery(audit_files.gallery(context.url, context.audit.id), evidence.channels)


@FINDING_RENDERERS.register("probe_sensitivity")
def probe_sensitivity(
    finding: FindingRow, evidence: ProbeSensitivityEvidence, context: FindingContext
) -> None:
    rows = [r for r in context.audit.probe_results if r.probe == finding.probe]
    if rows:
        st.altair_chart(charts.probe_chart(rows), width="stretch")


@FINDING_RENDERERS.register("explanation_drift")
def explanation_drift(
    finding: FindingRow, evidence: ExplanationDriftEvidence, context: FindingContext
) -> None:
    low, high = evidence.no_drift_interval
    columns = st.columns(3)
    columns[0].metric(evidence.statistic, f"{evidence.value:.3f}")
    columns[1].metric("no-drift range", f"{low:.2f} – {high:.2f}")
    columns[2].metric(f"threshold ({evidence.bound})", f"{evidence.threshold:g}")
    st.page_link("views/drift.py", label="Drift timeline", icon=":material/timeline:")


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


@FINDING_RENDERERS.register("unlabeled_subclass")
def unlabeled_subclass(
    finding: FindingRow, evidence: UnlabeledSubclassEvidence, context: FindingContext
) -> None:
    columns = st.columns(4)
    columns[0].metric("production members", evidence.n_production)
    columns[1].metric("confidence", f"{evidence.confidence:.0%}")
    columns[2].metric("distance ratio", _ratio(evidence.distance_ratio))
    columns[3].metric("profile distance", _ratio(evidence.profile_distance))
    st.page_link(
        "views/embeddings.py",
        label="Show the cluster on the map",
        icon=":material/scatter_plot:",
        query_params={"audit": str(context.audit.id), "cluster": str(evidence.cluster)},
    )


@FINDING_RENDERERS.register("novel_cluster")
def novel_cluster(
    finding: FindingRow, evidence: NovelClusterEvidence, context: FindingContext
) -> None:
    columns = st.columns(4)
    columns[0].metric("production members", evidence.n_production,
                      f"{evidence.production_share:.0%} of production", delta_color="off")
    columns[1].metric("reference share", f"{evidence.reference_share:.2f}",
                      f"all samples {evidence.overall_reference_share:.2f}", delta_color="off")
    columns[2].metric("distance ratio", _ratio(evidence.distance_ratio),
                      f"p = {evidence.distance_p_value:.3g}", delta_color="off")
    columns[3].metric("confidence", f"{evidence.confidence:.0%}",
                      f"reference {evidence.reference_confidence:.0%}", delta_color="off")
    mix = ", ".join(f"{name}: {n}" for name, n in evidence.predictions.items())
    st.caption(literal(
        f"predictions {mix}; reference share p = {evidence.share_p_value:.2g} (exact "
        f"permutation null), distance p over {evidence.n_permutations} role permutations; "
        f"false-alarm rate at most {evidence.alpha:g} per audit"
    ))
    st.table({
        "member": evidence.members,
        "nearest reference": evidence.nearest_reference,
        "distance": [round(d, 3) for d in evidence.member_distances],
    })
    st.page_link(
        "views/embeddings.py",
        label="Show the cluster on the map",
        icon=":material/scatter_plot:",
        query_params={"audit": str(context.audit.id), "cluster": str(evidence.cluster)},
    )
