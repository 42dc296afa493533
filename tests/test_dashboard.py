"""The review dashboard under Streamlit's AppTest: every page against a database seeded by
real audits, the login modes, a verdict round trip into the store (and carried over to the
same finding of a later audit), and bounded queries over 100 synthetic audits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from markdown_it import MarkdownIt
from PIL import Image
from sqlalchemy import event
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from auditor.artefacts.gallery_files import MANIFEST, MANIFEST_VERSION
from auditor.dashboard_access import auth_mode
from auditor.evidence import FINDING_KINDS
from auditor.store import (
    AuditRow,
    AuditStore,
    FindingRow,
    ModelVersionRow,
    RegisteredModelRow,
    ReviewRow,
)
from dashboards import queries, review_queries
from dashboards.auth import OPEN_BANNER
from dashboards.findings import FINDING_RENDERERS
from dashboards.query_results import UNREVIEWED, ReviewFilter
from dashboards.text import literal

from .dashboard_synthetic import seed_synthetic
from .evidence_examples import example_evidence

if TYPE_CHECKING:
    from .dashboard_seed import SeededStore

pytest_plugins = ["tests.dashboard_seed"]

APP = Path(__file__).resolve().parents[1] / "dashboards" / "app.py"
TIMEOUT_S = 300


@pytest.fixture
def loopback():
    """Streamlit bound to 127.0.0.1 (open mode allowed), whatever the working directory."""
    before = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")
    yield
    st_config.set_option("server.address", before)


@pytest.fixture
def seeded(seeded_store: SeededStore, monkeypatch, loopback) -> SeededStore:
    monkeypatch.setenv("AUDITOR_DB_URL", seeded_store.url)
    return seeded_store


def open_page(page: str | None = None, *, secrets: dict | None = None, **query: object) -> AppTest:
    """Run the app, switch to `page` with `query` parameters; no page may raise."""
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    app.secrets.update(secrets or {})
    app.run()
    if page is not None:
        app.switch_page(page)
        for name, value in query.items():
            app.query_params[name] = str(value)
        app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def texts(app: AppTest) -> str:
    """Every markdown, caption and title on the page, one per line."""
    elements = [*app.title, *app.header, *app.subheader, *app.markdown, *app.caption]
    return "\n".join(str(e.value) for e in elements)


def charts(app: AppTest) -> int:
    return len(app.get("vega_lite_chart"))


def test_auth_modes():
    assert auth_mode({"auth": {"client_id": "x"}}, "0.0.0.0") == "oidc"
    assert auth_mode({"dashboard": {"password": "pw"}}, "0.0.0.0") == "password"
    assert auth_mode({}, "127.0.0.1") == "open"
    assert auth_mode({}, "0.0.0.0") == "refused"
    assert auth_mode({}, None) == "refused"  # streamlit's default binds every interface


def test_overview_shows_models_findings_and_drift(seeded: SeededStore):
    app = open_page()
    assert [w.value for w in app.warning] == [OPEN_BANNER]
    assert "counterfeit-detector" in [s.value for s in app.subheader]
    (open_findings,) = [m for m in app.metric if m.label == "open findings"]
    assert open_findings.value == "2"  # the repeat audit: probe sensitivity + spurious channels
    assert charts(app) == 1  # the spearman sparkline
    assert f"last audit **#{seeded.repeat_audit}** succeeded" in texts(app)


def test_audit_page_shows_a_cancelled_audit_as_a_warning(tmp_path, monkeypatch, loopback):
    url = f"sqlite:///{tmp_path / 'auditor.db'}"
    store = AuditStore(url)
    audit_id = store.start_audit(
        model_uri="models:/counterfeit@production", config_yaml="{}", config_hash="0" * 64,
        code_version="0.1.0",
    )  # fmt: skip
    store.cancel_audit(audit_id, "cancelled: terminated (SIGTERM) before the audit finished")
    store.close()
    monkeypatch.setenv("AUDITOR_DB_URL", url)
    app = open_page("views/audit.py", audit=audit_id)
    assert "· cancelled ·" in texts(app)
    assert [w.value for w in app.warning][-1] == (
        "cancelled: terminated (SIGTERM) before the audit finished"
    )
    assert not app.error


def test_audit_page_shows_every_finding_with_its_evidence(seeded: SeededStore):
    app = open_page("views/audit.py", audit=seeded.shortcut_audit)
    page = texts(app)
    for title in (
        "most relevant channels of layer3 for class 'fake'",
        "grayscale flips",
        "Jensen-Shannon",
    ):
        assert title in page
    assert "Dose-response over k" in page
    assert "Channel " in page and "top samples by activation" in page
    assert len(app.get("image")) >= 2  # gallery strips: samples and heatmaps
    # dropout (finding + audit), dose-response, relevance, probes (finding + audit)
    assert charts(app) >= 6
    assert app.dataframe[0].value["probe"].tolist() == ["grayscale"]


def dose_response_charts(app: AppTest) -> int:
    """Charts of the dropout metric over k (their x axis: channels dropped)."""
    return sum("channels dropped (k)" in e.proto.spec for e in app.get("vega_lite_chart"))


def test_audit_page_shows_the_dose_response_of_a_spurious_channels_finding(seeded: SeededStore):
    store = AuditStore(seeded.url)
    spurious = [f for f in store.findings(seeded.shortcut_audit) if f.kind == "spurious_channels"]
    store.close()
    assert spurious
    app = open_page("views/audit.py", audit=seeded.shortcut_audit)
    # one per spurious_channels finding, and the audit's own at the end of the page
    assert dose_response_charts(app) == len(spurious) + 1


def test_every_finding_kind_has_a_renderer():
    assert set(FINDING_KINDS.names()) <= set(FINDING_RENDERERS.names())


def test_sample_explorer_explains_and_finds_neighbours(seeded: SeededStore):
    app = open_page("views/samples.py", audit=seeded.shortcut_audit)
    assert app.metric[0].label == "predicted"
    images = len(app.get("image"))
    assert images >= 3  # the sample, its heatmap, its neighbours
    method = next(s for s in app.selectbox if s.label == "Relevance method")
    method.set_value("grad_cam").run()
    assert not app.exception, [e.value for e in app.exception]
    space = next(s for s in app.selectbox if s.label == "Feature space")
    assert space.options[0].startswith("the audit's embedding")


def test_embeddings_page_maps_the_samples(seeded: SeededStore):
    app = open_page("views/embeddings.py", audit=seeded.shortcut_audit, cluster=0)
    assert len(app.get("plotly_chart")) == 1
    assert "Cluster 0" in [s.value for s in app.subheader]
    assert any(m.label == "members" for m in app.metric)
    colour = next(s for s in app.selectbox if s.label == "Colour by")
    assert {"predicted", "label", "finding", "set"} <= set(colour.options)


def test_drift_page_timeline_and_comparison(seeded: SeededStore):
    app = open_page("views/drift.py", a=seeded.control_audit, b=seeded.shortcut_audit)
    page = texts(app)
    for statistic in ("spearman", "jaccard_top_k", "js_distance"):
        assert f"**{statistic}**" in page
    assert "drift alerts" in page
    labels = {m.label: m.value for m in app.metric}
    assert float(labels["top-k overlap (Jaccard)"]) < 1  # the shortcut model ranks other channels
    assert charts(app) >= 5


def test_verdict_round_trips_and_carries_over(seeded: SeededStore):
    app = open_page(secrets={"dashboard": {"password": "s3cret"}})
    assert not app.metric  # the login form, nothing else
    app.text_input[0].input("Dr. Expert")
    app.text_input[1].input("s3cret")
    app.button[0].click().run()
    app.switch_page("views/review.py")
    app.query_params["audit"] = str(seeded.shortcut_audit)
    app.run()
    kinds = next(m for m in app.multiselect if m.label == "Kind")
    kinds.set_value(["spurious_channels"]).run()
    (radio,) = app.radio
    radio.set_value("confirmed")
    app.text_area[0].input("green tint on every fake")
    next(b for b in app.button if b.label == "Save verdict").click().run()
    assert not app.exception

    store = AuditStore(seeded.url)
    (finding,) = [f for f in store.findings(seeded.shortcut_audit) if f.kind == "spurious_channels"]
    (review,) = store.reviews(finding.id)
    assert (review.status, review.reviewer, review.comment) == (
        "confirmed",
        "Dr. Expert",
        "green tint on every fake",
    )

    later = open_page("views/review.py", audit=seeded.repeat_audit)
    status = next(m for m in later.multiselect if m.label == "Status")
    status.set_value(["confirmed"]).run()
    page = texts(later)
    assert "Previous verdict of this finding" in page
    assert f"on the same finding in audit #{seeded.shortcut_audit}" in page


def test_wrong_password_shows_nothing(seeded: SeededStore):
    app = open_page(secrets={"dashboard": {"password": "s3cret"}})
    app.text_input[0].input("Mallory")
    app.text_input[1].input("guess")
    app.button[0].click().run()
    assert [e.value for e in app.error] == ["Wrong password."]
    assert not app.subheader


def test_refuses_to_run_open_off_loopback(seeded_store: SeededStore, monkeypatch):
    monkeypatch.setenv("AUDITOR_DB_URL", seeded_store.url)
    before = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    try:
        app = open_page()
    finally:
        st_config.set_option("server.address", before)
    assert "No login is configured" in app.error[0].value
    assert not app.subheader


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[int]]:
    """100 audits over three models, the newest with 10 000 mapped samples."""
    root = tmp_path_factory.mktemp("synthetic")
    url = f"sqlite:///{root / 'auditor.db'}"
    return url, seed_synthetic(url, root / "artifacts", audits=100, samples=10_000)


def count_statements(store: AuditStore) -> list[str]:
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    return statements


#: run in a fresh interpreter: the Overview, Drift and Review pages (the synthetic store's
#: newest model), then which heavy libraries the process has imported
LIGHT_PAGES = """
import json, sys
from streamlit import config
from streamlit.testing.v1 import AppTest
config.set_option("server.address", "127.0.0.1")
app = AppTest.from_file(sys.argv[1], default_timeout=300)
app.run()
shown = [s.value for s in app.subheader]
for page in ("views/drift.py", "views/review.py"):
    app.switch_page(page)
    app.run()
errors = [str(e.value) for e in app.exception]
print(json.dumps({"shown": shown, "errors": errors,
                  "heavy": sorted(m for m in ("torch", "mlflow", "faiss") if m in sys.modules)}))
"""


def test_read_only_pages_import_no_torch_mlflow_or_faiss(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'auditor.db'}"
    seed_synthetic(url, tmp_path / "artifacts", audits=6, samples=40)
    monkeypatch.setenv("AUDITOR_DB_URL", url)
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_PAGES, str(APP)],
        check=True, capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    pages = json.loads(done.stdout.strip().splitlines()[-1])
    assert pages["errors"] == []
    assert "model-0" in pages["shown"]
    assert pages["heavy"] == []


def test_overview_and_review_queries_stay_bounded(synthetic):
    url, _ = synthetic
    store = AuditStore(url)
    statements = count_statements(store)
    cards = queries.model_cards(store)
    assert len(statements) <= 5  # BEGIN + 4 queries, whatever the number of audits
    assert [c.name for c in cards] == ["model-0", "model-1", "model-2"]
    assert all(len(c.drift) == 30 for c in cards)  # the sparkline keeps the newest 30 audits
    assert (
        cards[0].to_review == 0
    )  # its newest audit's fingerprints were reviewed in earlier audits

    statements.clear()
    page = review_queries.review_queue(store, ReviewFilter(), limit=20, offset=40)
    assert len(statements) <= 3  # BEGIN + count + page
    assert (len(page.items), page.total) == (20, 400)
    assert all(item.verdict and item.verdict.status == "confirmed" for item in page.items)
    unreviewed = review_queries.review_queue(
        store, ReviewFilter(statuses=(UNREVIEWED,)), limit=20
    )
    assert unreviewed.total == 0


def test_pages_render_over_100_audits_and_10000_samples(synthetic, monkeypatch, loopback):
    url, ids = synthetic
    monkeypatch.setenv("AUDITOR_DB_URL", url)
    review = open_page("views/review.py")
    assert "0 findings match" in texts(review)  # every fingerprint was confirmed once
    embeddings = open_page("views/embeddings.py", audit=ids[-1])
    assert len(embeddings.get("plotly_chart")) == 1
    assert "10000 of 10000 samples mapped" in texts(embeddings)


INJECTED = "![x](http://tracker.example/track?id=1)"
COUNTERFACTUAL = {
    "n_recipients": 32, "flip_rate": 0.94, "control_flip_rate": 0.03, "control": "random_region",
    "cue_only": 29, "control_only": 0, "p_value": 1.9e-9, "alpha": 0.01, "confirmed": True,
    "recipients": ["s1", "s2"], "donors": ["s50", "s51"],
}  # fmt: skip
EXPLANATION = {
    "explained_by": "patch_occlusion(cell=0)", "flip_rate": 0.49, "occluded_flip_rate": 0.0,
    "neutral_flip_rate": 0.0, "vanished": 39, "appeared": 0, "p_value": 1.8e-12,
    "remaining_excess": 0.0, "excess_threshold": 0.2, "alpha": 0.01, "explained": True,
}  # fmt: skip


def seed_injection(url: str, artifacts_dir: Path) -> int:
    """A succeeded audit whose model name, layer, finding titles, reviewer comment and gallery
    sample ids all hold markdown image syntax; returns its id."""
    store = AuditStore(url)
    with store.transaction() as session:
        version = ModelVersionRow(
            model=RegisteredModelRow(name=f"model {INJECTED}"), version="1",
            uri="models:/m@prod", flavor="pytorch-pt2",
        )  # fmt: skip
        audit = AuditRow(
            model_version=version, model_uri=f"models:/{INJECTED}", status="succeeded",
            config_yaml=yaml.safe_dump({"artifacts_dir": str(artifacts_dir)}), config_hash="0" * 64,
            code_version="test", layer=f"layer3 {INJECTED}", n_samples=2, n_labelled=0,
        )  # fmt: skip
        audit.findings = [
            FindingRow(
                kind=kind, severity="high", title=f"class '{INJECTED}' {kind}", probe="grayscale",
                evidence=example_evidence(kind, **changes).model_dump(mode="json"), fingerprint=kind,
                reviews=[ReviewRow(status="needs_data", reviewer=INJECTED, comment=INJECTED)],
            )
            for kind, changes in (
                ("spurious_channels", {"channels": [1], "class_name": INJECTED,
                                       "counterfactual": COUNTERFACTUAL}),
                ("probe_sensitivity", {}),
                ("novel_cluster", {"members": [INJECTED, "new-1"]}),
            )
        ]
        audit.findings[1].supports = audit.findings[0]  # one verdict: the probe supports it
        audit.findings[1].explanation = {**EXPLANATION, "explained_by": INJECTED}
        session.add(audit)
        session.flush()
        audit_id = audit.id
    store.close()
    folder = artifacts_dir / f"audit-{audit_id}" / "gallery"
    folder.mkdir(parents=True)
    for name in ("samples.png", "heatmaps.png"):
        Image.new("RGB", (8, 8)).save(folder / name)
    entry = {"sample_index": 0, "sample_id": INJECTED, "score": 1.0, "relevance": 1.0,
             "position": [0, 0], "located_by": "relevance", "box": [0, 0, 8, 8]}  # fmt: skip
    manifest = {
        "format_version": MANIFEST_VERSION, "layer": "layer3", "target": "predicted",
        "channel_sets": {"top_k": [1]},
        "channels": [{"channel": 1, "sets": ["top_k"], "entries": [entry],
                      "samples_image": "samples.png", "heatmaps_image": "heatmaps.png"}],
    }  # fmt: skip
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return audit_id


def test_novel_cluster_and_counterfactual_show_their_nulls(tmp_path, monkeypatch, loopback):
    url = f"sqlite:///{tmp_path / 'auditor.db'}"
    audit_id = seed_injection(url, tmp_path / "artefacts")
    monkeypatch.setenv("AUDITOR_DB_URL", url)
    app = open_page("views/audit.py", audit=audit_id)
    metrics = {m.label: (m.value, m.proto.delta) for m in app.metric}
    moved = f"cue transplanted: moved to '{literal(INJECTED)}'"
    assert metrics[moved] == ("94%", "32 recipients")
    assert metrics["control"] == ("3%", "the same donor's region of the same size elsewhere")
    assert metrics["McNemar p"] == ("1.9e-09", "confirmed")
    assert metrics["reference share"] == ("0.11", "all samples 0.50")
    assert metrics["distance ratio"] == ("2.10", "p = 0.005")
    assert metrics["confidence"] == ("75%", "reference 97%")
    assert "false-alarm rate at most 0.01 per audit" in texts(app)
    page = texts(app)
    assert "Verdicts (2) from 3 findings" in page
    assert "**Supporting evidence (1 findings)**" in page
    assert (
        f"explained by {literal(INJECTED)}: with it occluded this probe flips 0% of predictions "
        "instead of 49% (39 flips vanish, 0 appear; McNemar p = 1.8e-12)"
    ) in page
    (table,) = [t for t in app.table if "nearest reference" in t.value.columns]
    assert table.value["nearest reference"].tolist() == ["vali-0-3", "vali-1-7"]


def rendered_markdown(app: AppTest) -> list[str]:
    """Every text the page hands to Streamlit's markdown renderer: markdown, captions,
    headers, alerts, metric labels and values, image captions."""
    kinds = (app.title, app.header, app.subheader, app.markdown, app.caption, app.info,
             app.warning, app.error, app.success)  # fmt: skip
    values = [str(e.value) for elements in kinds for e in elements]
    values += [text for m in app.metric for text in (m.label, m.value)]
    values += [img.caption for element in app.get("imgs") for img in element.proto.imgs]
    return values


def test_user_data_renders_as_text_never_as_markdown(tmp_path, monkeypatch, loopback):
    url = f"sqlite:///{tmp_path / 'auditor.db'}"
    audit_id = seed_injection(url, tmp_path / "artefacts")
    monkeypatch.setenv("AUDITOR_DB_URL", url)
    html = MarkdownIt("commonmark")
    pages = {
        "overview": open_page(),
        "audit": open_page("views/audit.py", audit=audit_id),
        "review": open_page("views/review.py"),
    }
    for name, app in pages.items():
        shown = rendered_markdown(app)
        assert any(literal(INJECTED) in text for text in shown), name  # shown, escaped
        images = [text for text in shown if "<img" in html.render(text) or "<a " in html.render(text)]
        assert not images, (name, images)
    assert "tracker.example" in html.render(literal(INJECTED))  # the text stays readable
