"""Finding kinds: typed evidence, validated kinds, the report and store round trip, and a
finding kind (evidence model and dashboard renderer) added by a plug-in."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from streamlit.testing.v1 import AppTest

from auditor.artefacts.report import build_report
from auditor.evidence import FINDING_KINDS, DropoutEffect, FindingEvidence, FindingKind
from auditor.registry import UnknownExtensionError
from auditor.results import Finding
from auditor.store import AuditStore
from dashboards.findings import FINDING_RENDERERS

from .evidence_examples import EXAMPLES, example_evidence
from .plugins import install_plugin
from .test_dashboard import APP, TIMEOUT_S, loopback  # noqa: F401 -- the fixture
from .test_store import make_result, start


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_evidence_json_is_what_the_model_reads(kind: str) -> None:
    evidence = example_evidence(kind)
    assert evidence.model_dump(mode="json") == EXAMPLES[kind]
    assert FINDING_KINDS.get(kind).read(json.loads(evidence.model_dump_json())) == evidence


def test_an_untested_dropout_effect_has_no_statistics_key() -> None:
    summary = dict(EXAMPLES["spurious_channels"]["dropout"])
    del summary["statistics"]
    assert DropoutEffect.model_validate(summary).model_dump(mode="json") == summary


def test_findings_of_unknown_kinds_or_other_evidence_are_refused() -> None:
    with pytest.raises(UnknownExtensionError, match="unknown finding kind 'shortcut'; known:"):
        Finding("shortcut", "high", "t", example_evidence("probe_sensitivity"))
    with pytest.raises(TypeError, match="spurious_channels finding needs SpuriousChannelsEvidence"):
        Finding("spurious_channels", "high", "t", example_evidence("probe_sensitivity"))
    with pytest.raises(ValidationError, match="excess_flip"):
        FINDING_KINDS.get("probe_sensitivity").read({"excess_flip": 0.37})


def test_a_kind_must_fingerprint_fields_of_its_evidence() -> None:
    with pytest.raises(TypeError, match=r"fingerprint fields \['cluster'\] are not fields"):
        FINDING_KINDS.add(
            "loose", FindingKind("t", FindingEvidence, fingerprint_fields=("cluster",))
        )
    assert "loose" not in FINDING_KINDS


PLUGIN = """
import streamlit as st
from auditor.evidence import FindingEvidence, FindingKind

class CalibrationEvidence(FindingEvidence):
    class_index: int
    expected_calibration_error: float

KIND = FindingKind(
    "predicted probabilities of a class are far from its accuracy",
    CalibrationEvidence,
    fingerprint_fields=("class_index",),
)

def render(finding, evidence, context):
    st.metric("expected calibration error", f"{evidence.expected_calibration_error:.2f}")
"""


@pytest.fixture
def calibration_plugin(tmp_path, monkeypatch) -> type[FindingEvidence]:
    """A distribution declaring the `calibration_gap` kind and its renderer; the registries
    discover plug-ins anew and lose the kind after the test."""
    install_plugin(
        tmp_path,
        monkeypatch,
        "team_calibration",
        PLUGIN,
        {
            "relevance_auditor.finding_kinds": {"calibration_gap": "team_calibration:KIND"},
            "relevance_auditor.finding_renderers": {"calibration_gap": "team_calibration:render"},
        },
    )
    for registry in (FINDING_KINDS, FINDING_RENDERERS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_discovered", False)
    return FINDING_KINDS.get("calibration_gap").evidence


@pytest.mark.usefixtures("loopback")
def test_a_plugin_adds_a_finding_kind_with_its_renderer(
    calibration_plugin, tmp_path, monkeypatch
) -> None:
    evidence = calibration_plugin(class_index=1, expected_calibration_error=0.31)
    finding = Finding("calibration_gap", "medium", "class 'fake' is overconfident", evidence)
    result = make_result()
    result.findings.append(finding)
    assert build_report(1, result)["findings"][-1]["evidence"] == {
        "class_index": 1,
        "expected_calibration_error": 0.31,
    }

    url = f"sqlite:///{tmp_path / 'auditor.db'}"
    store = AuditStore(url)
    audit_id = start(store)
    store.finish_audit(audit_id, result)
    stored = store.get_audit(audit_id).findings[-1]
    store.close()
    assert stored.typed_evidence == evidence
    assert "calibration_gap" in FINDING_RENDERERS

    monkeypatch.setenv("AUDITOR_DB_URL", url)
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    app.run()
    app.switch_page("views/audit.py")
    app.query_params["audit"] = str(audit_id)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    (metric,) = [m for m in app.metric if m.label == "expected calibration error"]
    assert metric.value == "0.31"
