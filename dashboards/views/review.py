"""Review: a verdict on each finding (confirmed / false alarm / needs data) with a comment,
stored with the reviewer and time. A verdict holds for the same finding (fingerprint) in later
audits: a new finding shows the previous verdict, and a false alarm silences its alerts."""

from __future__ import annotations

import math

import streamlit as st

from dashboards import auth, data, widgets
from dashboards.query_results import SEVERITIES, UNREVIEWED, VERDICTS, FindingItem, ReviewFilter
from dashboards.text import literal

PAGE_SIZE = 20
STATUS_LABELS = {UNREVIEWED: "not reviewed", **widgets.VERDICT_LABELS}


def verdict_form(item: FindingItem, reviewer: str | None) -> None:
    """Radio + comment + submit for one finding; the verdict goes straight to the store."""
    with st.form(f"review_{item.id}", border=False):
        previous = VERDICTS.index(item.verdict.status) if item.verdict else None
        status = st.radio(
            "Verdict",
            VERDICTS,
            index=previous,
            format_func=widgets.VERDICT_LABELS.get,
            horizontal=True,
            key=f"verdict_{item.id}",
        )
        comment = st.text_area(
            "Comment",
            key=f"comment_{item.id}",
            height=68,
            placeholder="what you saw, what data is missing ...",
        )
        submitted = st.form_submit_button("Save verdict", disabled=reviewer is None)
    if reviewer is None:
        st.caption("Enter your name in the sidebar to record verdicts.")
    if submitted and status is not None and reviewer is not None:
        data.add_review(url, item.id, status, reviewer, comment)
        st.toast(f"Saved: finding {item.id} {widgets.VERDICT_LABELS[status]}")
        st.rerun()


def finding_row(item: FindingItem, reviewer: str | None) -> None:
    with st.container(border=True):
        header = st.container(horizontal=True)
        with header:
            widgets.severity_badge(item.severity)
            st.badge(item.kind.replace("_", " "), color="gray")
            st.page_link(
                "views/audit.py",
                label=f"audit #{item.audit_id}",
                query_params={"audit": str(item.audit_id)},
            )
            st.caption(f"{literal(item.model)} · {item.audited_at:%Y-%m-%d %H:%M} UTC")
        st.markdown(f"**{literal(item.title)}**")
        if item.carried_over:
            st.markdown("**Previous verdict of this finding** (same fingerprint, earlier review):")
        widgets.verdict_line(item.verdict, item.id)
        with st.expander("Evidence"):
            st.json(item.evidence, expanded=False)
        verdict_form(item, reviewer)


st.title("Review")
url = data.db_url()
data.open_store(url)
reviewer = auth.identity().reviewer

filters = st.columns(4)
statuses = filters[0].multiselect(
    "Status", list(STATUS_LABELS), default=[UNREVIEWED, "needs_data"], format_func=STATUS_LABELS.get
)
severities = filters[1].multiselect("Severity", SEVERITIES)
models = filters[2].multiselect("Model", data.model_names(url))
kinds = filters[3].multiselect("Kind", data.finding_kinds(url))
audit_id = widgets.query_int("audit")
if audit_id is not None and not st.checkbox(f"only audit #{audit_id}", value=True):
    del st.query_params["audit"]
    audit_id = None

flt = ReviewFilter(tuple(statuses), tuple(severities), tuple(models), tuple(kinds), audit_id)
total = data.review_queue(url, flt, PAGE_SIZE, 0).total
pages = max(1, math.ceil(total / PAGE_SIZE))
page = st.number_input("Page", min_value=1, max_value=pages, value=1, step=1) if pages > 1 else 1
queue = data.review_queue(url, flt, PAGE_SIZE, (page - 1) * PAGE_SIZE)
st.caption(f"{total} findings match · page {page} of {pages}")
if not queue.items:
    st.info("No findings match these filters.")
for item in queue.items:
    finding_row(item, reviewer)
