"""The audit pipeline on the counterfeit scenario [Chandrasegaran2022], in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.audit.lifecycle import run_audit
from auditor.audit.stages import finding_thresholds
from auditor.checks.findings import validated
from auditor.config import AuditConfig, Thresholds
from auditor.errors import ReportError
from auditor.results import AuditOutcome
from auditor.store import AuditStore

from .conftest import Scenario, audit_config

pytestmark = pytest.mark.slow


def run(config: dict, tmp_path: Path) -> AuditOutcome:
    return run_audit(AuditConfig.model_validate(config), report_path=tmp_path / "report.json")


def kinds(outcome: AuditOutcome) -> set[tuple[str, str | None]]:
    return {(f.kind, f.probe) for f in outcome.result.findings}


def test_colour_shortcut_is_flagged_by_probe_and_channels(shortcut_scenario: Scenario, tmp_path):
    outcome = run(audit_config(shortcut_scenario, tmp_path), tmp_path)

    assert ("probe_sensitivity", "grayscale") in kinds(outcome)
    assert ("spurious_channels", "grayscale") in kinds(outcome)
    spurious = [f for f in outcome.result.findings if f.kind == "spurious_channels"]
    # only the channels of the class that carries the tint collapse under grayscale
    assert [f.evidence.class_name for f in spurious] == ["fake"]
    fake = next(c for c in outcome.result.classes if c.class_name == "fake")
    assert spurious[0].evidence.channels == fake.top_k
    assert spurious[0].evidence.top_k_activation_drop > 0.9
    probe = outcome.result.probes[0]
    assert probe.probed.flip_rate > probe.neutral.flip_rate + 0.2
    # per class, dropping the top-k channels costs far more margin than random-k or bottom-k
    for c in outcome.result.classes:
        d = c.dropout
        assert d.top_k.margin_drop > max(r.margin_drop for r in d.random_k)
        assert d.bottom_k.margin_drop < d.random_k_mean["margin_drop"]


def test_clean_control_is_validated_but_not_flagged(control_scenario: Scenario, tmp_path):
    outcome = run(audit_config(control_scenario, tmp_path), tmp_path)

    assert outcome.result.findings == []
    # its top-k channels are validated all the same, for every class
    assert [c.class_name for c in outcome.result.classes] == ["real", "fake"]
    assert all(validated(c.dropout, finding_thresholds(Thresholds())) for c in outcome.result.classes)
    assert outcome.result.dropout.baseline.accuracy >= 0.9


def test_report_and_store_hold_the_whole_audit(shortcut_scenario: Scenario, tmp_path):
    outcome = run(audit_config(shortcut_scenario, tmp_path), tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())

    assert report["audit_id"] == outcome.audit_id
    assert report["model"]["name"] == "model" and report["model"]["flavor"] == "pytorch-pt2"
    assert report["channels"]["layer"] == "layer3"
    assert len(report["channels"]["relevance"]) == 32 and len(report["channels"]["top_k"]) == 6
    assert set(report["dropout"]) >= {"top_k", "random_k", "bottom_k", "baseline"}
    metrics = {"accuracy", "average_precision", "flip_rate", "logit_drop", "margin_drop"}
    for condition in ("top_k", "random_k", "bottom_k"):
        assert set(report["dropout"][condition]) >= metrics
    assert [c["class_name"] for c in report["classes"]] == ["real", "fake"]
    assert report["classes"][1]["probes"]["grayscale"]["collapse"] > 0.3
    assert set(report["probes"]["grayscale"]) >= {"probed", "neutral", "top_k_activation_drop"}
    assert {f["kind"] for f in report["findings"]} == {"probe_sensitivity", "spurious_channels"}
    assert all(f["probe"] == "grayscale" for f in report["findings"])
    # one verdict: the channel finding heads it, its cue transplanted into reals flips them
    assert report["format_version"] == 3
    assert report["verdicts"] == [{"finding": 0, "supporting": [1]}]
    assert [f["kind"] for f in report["findings"]] == ["spurious_channels", "probe_sensitivity"]
    counterfactual = report["findings"][0]["evidence"]["counterfactual"]
    assert counterfactual["confirmed"] and counterfactual["control"] == "same_class_donor"
    assert counterfactual["flip_rate"] > counterfactual["control_flip_rate"] + 0.5

    store = AuditStore(audit_config(shortcut_scenario, tmp_path)["store_url"])
    stored = store.get_audit(outcome.audit_id)
    store.close()
    assert stored.status == "succeeded" and stored.error is None
    assert stored.layer == "layer3" and stored.n_samples == 600 and stored.n_labelled == 300
    assert len(stored.channel_stats) == 32
    assert sorted(c.channel for c in stored.channel_stats if c.in_top_k) == sorted(outcome.result.channels.top_k)
    assert {r.condition for r in stored.dropout_results} == {"baseline", "top_k", "random_k", "bottom_k"}
    # the random sets are sized so that Holm's smallest level over the audit's 4 tests (2
    # classes x grayscale's probe_sensitivity and spurious_channels) is reachable: 2 x 4 / 0.05 - 1
    random_sets = sum(r.condition == "random_k" for r in stored.dropout_results)
    assert random_sets == len(outcome.result.dropout.random_k) == 159
    assert {f.kind for f in stored.findings} == {"probe_sensitivity", "spurious_channels"}
    assert [f.supports_id for f in stored.findings] == [None, stored.findings[0].id]


def test_unlabeled_samples_use_flip_rate_and_logit_drop(shortcut_scenario: Scenario, tmp_path):
    config = audit_config(shortcut_scenario, tmp_path, samples=[("production", shortcut_scenario.production)])
    outcome = run(config, tmp_path)

    d = outcome.result.dropout
    assert outcome.result.n_labelled == 0
    assert d.top_k.accuracy is None and d.top_k.average_precision is None
    assert d.top_k.logit_drop > d.random_k_mean["logit_drop"]
    assert d.top_k.margin_drop > d.random_k_mean["margin_drop"]
    assert ("probe_sensitivity", "grayscale") in kinds(outcome)
    assert ("spurious_channels", "grayscale") in kinds(outcome)


def test_same_config_gives_same_ranking_and_findings(shortcut_scenario: Scenario, tmp_path):
    config = audit_config(shortcut_scenario, tmp_path)
    first, second = run(config, tmp_path), run(config, tmp_path)

    assert first.audit_id != second.audit_id
    assert first.result.channels.top_k == second.result.channels.top_k
    assert first.result.channels.relevance == second.result.channels.relevance
    assert first.result.dropout.random_sets == second.result.dropout.random_sets
    assert first.result.findings == second.result.findings


def test_a_report_that_cannot_be_moved_into_place_leaves_the_stored_audit_alone(
    shortcut_scenario: Scenario, tmp_path, monkeypatch
):
    """Defect: after `finish_audit` committed, the report could not be moved into place (its path
    became a folder while the audit ran, after the pre-flight had checked it). The audit stays
    succeeded with its files, and the error is a `ReportError` naming the report path (before:
    the files were deleted and `fail_audit` raised 'already succeeded')."""
    report = tmp_path / "report.json"
    commit = AuditStore.finish_audit

    def commit_then_take_the_report_path(self, *args, **kwargs):
        commit(self, *args, **kwargs)
        (report / "taken").mkdir(parents=True)

    monkeypatch.setattr(AuditStore, "finish_audit", commit_then_take_the_report_path)
    config = AuditConfig.model_validate(audit_config(shortcut_scenario, tmp_path, gallery={"enabled": False}))
    with pytest.raises(ReportError, match=f"report {report}") as raised:
        run_audit(config, report_path=report)
    assert raised.value.fix and "already" not in str(raised.value)
    store = AuditStore(config.store_url)
    try:
        [listed] = store.list_audits()
        audit = store.get_audit(listed.id)
    finally:
        store.close()
    assert audit.status == "succeeded" and audit.findings
    assert config.audit_artifact_dir(audit.id).exists()
    assert not list(tmp_path.glob(".report.json*"))
