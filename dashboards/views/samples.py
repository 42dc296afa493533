"""Sample explorer: one sample of an audit, its prediction, its heatmap by a chosen relevance
method, and its nearest samples in a chosen feature space (FAISS)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from auditor.artefacts.embeddings import load_index, sample_row
from auditor.checks.neighbours import IndexHandle
from auditor.errors import AuditorError
from auditor.relevance import composites, methods
from dashboards import audit_files, charts, inference, widgets
from dashboards.text import literal

NEIGHBOURS = 8
STORED = "stored"


@st.cache_data(max_entries=64, show_spinner="Computing the heatmap ...")
def heatmap(
    _model: inference.AuditedModel, audit_id: int, row: int, method: str, composite: str | None
) -> np.ndarray:
    return inference.heatmap(_model, row, method, composite)


@st.cache_resource(max_entries=4, show_spinner="Embedding every sample at that layer ...")
def feature_space(
    _model: inference.AuditedModel, audit_id: int, layer: str
) -> inference.FeatureSpace:
    return inference.feature_space(_model, layer)


@st.cache_resource(max_entries=2, show_spinner=False)
def stored_index(path: str) -> IndexHandle:
    return load_index(path)


def nearest_rows(
    model: inference.AuditedModel, audit_id: int, row: int, space: str
) -> list[tuple[int, float]]:
    """Rows of the samples nearest to `row` in the chosen space: the audit's stored embedding
    and FAISS index, or pooled activations at a layer."""
    if space != STORED:
        found = feature_space(model, audit_id, space)
        return inference.nearest(found.index, found.vectors, row, NEIGHBOURS)
    stored = audit_files.embedding_files(url, audit_id)
    rows = {sample_id: i for i, sample_id in enumerate(model.samples.ids)}
    vectors = stored.space.prepared()
    hits = inference.nearest(
        stored_index(str(stored.index_path)),
        vectors,
        sample_row(stored.space, model.samples.ids[row]),
        NEIGHBOURS,
    )
    return [(rows[stored.space.ids[i]], d) for i, d in hits if stored.space.ids[i] in rows]


def class_name(model: inference.AuditedModel, index: int) -> str:
    names = model.samples.class_names
    return "–" if index < 0 else names[index] if names and index < len(names) else str(index)


url, audit = widgets.page_audit("Sample explorer", succeeded_only=True)
try:
    model = audit_files.audited_model(audit.id, audit.config_yaml)
except AuditorError as err:
    st.error(f"Cannot load the audited model or samples: {literal(err)}")
    st.stop()
samples = model.samples

sets = list(dict.fromkeys(samples.set_names))
pick_set, pick_sample, pick_method = st.columns(3)
wanted = st.query_params.get("sample")
default_set = samples.set_names[samples.ids.index(wanted)] if wanted in samples.ids else sets[0]
sample_set = pick_set.selectbox("Sample set", sets, index=sets.index(default_set))
in_set = [i for i, name in enumerate(samples.set_names) if name == sample_set]
ids = [samples.ids[i] for i in in_set]
sample_id = pick_sample.selectbox("Sample", ids, index=ids.index(wanted) if wanted in ids else 0)
st.query_params["sample"] = sample_id
row = samples.ids.index(sample_id)
descriptions = methods()
method = pick_method.selectbox(
    "Relevance method",
    list(descriptions),
    index=list(descriptions).index(inference.LRP_METHOD),
    help="; ".join(f"{k}: {v}" for k, v in descriptions.items()),
)
composite = None
if method == inference.LRP_METHOD:
    rules = composites()
    composite = pick_method.selectbox(
        "LRP composite",
        list(rules),
        index=list(rules).index("epsilon_plus"),
        format_func=lambda c: f"{c}: {rules[c]}",
    )

probabilities = inference.probabilities(model, row)
predicted = int(probabilities.argmax())
image, explained, prediction = st.columns([2, 2, 3])
image.image(
    widgets.display_image(samples.images[row]),
    caption=literal(f"{sample_id} ({sample_set})"),
    width="stretch",
)
try:
    relevance = heatmap(model, audit.id, row, method, composite)
    explained.image(
        widgets.display_image(samples.images[row], relevance),
        caption=literal(f"{method}{f' ({composite})' if composite else ''}: red for, blue against '{class_name(model, predicted)}'"),
        width="stretch",
    )
except AuditorError as err:
    explained.error(literal(err))
with prediction:
    st.metric(
        "predicted",
        literal(class_name(model, predicted)),
        literal(f"label: {class_name(model, int(samples.labels[row]))}"),
        delta_color="off",
        delta_arrow="off",
    )
    classes = [class_name(model, c) for c in range(len(probabilities))]
    st.altair_chart(charts.probability_chart(classes, probabilities.tolist()), width="stretch")

st.subheader("Nearest samples")
stored = audit_files.embedding_files(url, audit.id)
spaces = ([STORED] if stored is not None and stored.index_path is not None else []) + list(
    dict.fromkeys([audit.layer, *inference.feature_layers(model)])
)
space = st.selectbox(
    "Feature space",
    spaces,
    format_func=lambda s: (
        f"the audit's embedding ({stored.space.layer}, {stored.space.metric})"
        if s == STORED
        else f"pooled activations at {s} (cosine)"
    ),
)
try:
    hits = nearest_rows(model, audit.id, row, space)
except AuditorError as err:
    st.error(literal(err))
    st.stop()
widgets.thumbnails(
    [samples.images[i] for i, _ in hits],
    [
        f"{samples.ids[i]} · pred {class_name(model, int(inference.probabilities(model, i).argmax()))} · label {class_name(model, int(samples.labels[i]))} · d={d:.3f}"
        for i, d in hits
    ],
    per_row=NEIGHBOURS // 2,
)
