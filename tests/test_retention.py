"""Retention: artefact files of old audits are deleted, their statistics and findings stay."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from auditor.audit.drift import explanation_drift
from auditor.audit.post_audit import after_audit
from auditor.config import AuditConfig, RetentionSettings
from auditor.results import ArtefactRef
from auditor.store import AuditStore
from auditor.store.retention import local_path, prune_artefacts
from auditor.store.schema import utcnow

from . import test_store
from .test_store import N_CHANNELS, make_drift, make_result, set_columns, start

sqlite_url, postgresql_url = test_store.sqlite_url, test_store.postgresql_url
db_url, store = test_store.db_url, test_store.store

POLICY = RetentionSettings(artefact_days=30, keep_last=1)


def finished(
    store: AuditStore, root: Path, name: str, age_days: float, model: str = "skin-lesion-cnn"
) -> int:
    """A succeeded audit of `model`, finished `age_days` ago, with a report, a gallery folder
    for its first finding, a heatmap file given as a file: URI and an MLflow artefact."""
    gallery = root / name / "gallery"
    gallery.mkdir(parents=True)
    (gallery / "0.png").write_bytes(b"\x89PNG")
    heatmap = root / name / "heatmap.npy"
    heatmap.write_bytes(b"\x93NUMPY")
    report = root / name / "report.json"
    report.write_text("{}")
    audit_id = start(store)
    store.finish_audit(
        audit_id,
        make_result(model_name=model),
        report_path=str(report),
        drift=make_drift(None),
        artefacts=[
            ArtefactRef("gallery", str(gallery), finding=0),
            ArtefactRef("heatmap", heatmap.as_uri()),
            ArtefactRef("relevance", f"mlflow-artifacts:/1/{name}/relevance.npy"),
        ],
    )
    set_columns(store, audit_id, finished_at=utcnow() - timedelta(days=age_days))
    return audit_id


def files(root: Path, name: str) -> list[str]:
    return sorted(str(p.relative_to(root / name)) for p in (root / name).rglob("*"))


def test_old_artefacts_are_pruned_statistics_stay(store: AuditStore, tmp_path: Path) -> None:
    oldest = finished(store, tmp_path, "oldest", 90)
    pinned = finished(store, tmp_path, "pinned", 60)
    older = finished(store, tmp_path, "older", 45)
    newest = finished(store, tmp_path, "newest", 10)
    other_model = finished(store, tmp_path, "other", 100, model="another-model")
    failed = start(store)
    store.fail_audit(failed, "boom")
    (tmp_path / "older" / "heatmap.npy").unlink()  # already gone: still recorded as pruned

    report = prune_artefacts(store, POLICY, pinned=[pinned])

    for name in ("oldest", "older"):
        assert files(tmp_path, name) == []
    everything = ["gallery", "gallery/0.png", "heatmap.npy", "report.json"]
    for name in ("pinned", "newest", "other"):
        assert files(tmp_path, name) == everything
    assert report.not_local == [
        "mlflow-artifacts:/1/oldest/relevance.npy",
        "mlflow-artifacts:/1/older/relevance.npy",
    ]
    pruned_ids = set(report.pruned)
    for audit_id in (oldest, older):
        audit = store.get_audit(audit_id)
        kinds = {a.kind: a for a in audit.artefacts}
        assert {kinds[k].id for k in ("report", "gallery", "heatmap")} <= pruned_ids
        assert all(kinds[k].pruned_at is not None for k in ("report", "gallery", "heatmap"))
        assert kinds["relevance"].pruned_at is None  # not a local file: left alone
        # the statistics stay: channels, dropout, probes, findings, bootstrap
        assert len(audit.channel_stats) == N_CHANNELS
        assert len(audit.dropout_results) == 8 and len(audit.probe_results) == 2
        assert [f.kind for f in audit.findings] == ["spurious_channels", "probe_sensitivity"]
        assert audit.findings[0].artefacts[0].kind == "gallery"
        assert audit.bootstrap is not None
    for audit_id in (pinned, newest, other_model):
        assert all(a.pruned_at is None for a in store.artefacts(audit_id))

    again = prune_artefacts(store, POLICY, pinned=[pinned])
    assert again.pruned == [] and len(again.not_local) == 2

    # drift still compares against an audit whose artefacts are gone
    matrix = np.random.default_rng(0).uniform(0, 0.2, size=(200, N_CHANNELS)).astype(np.float32)
    cfg = AuditConfig.model_validate(
        {
            "model": {"uri": "m"},
            "samples": [{"name": "p", "uri": "p"}],
            "drift": {"baseline_audit_id": oldest},
        }
    )
    drift = explanation_drift(store, make_result(), matrix, cfg)
    assert drift.baseline_audit_id == oldest and len(drift.statistics) == 4


def test_without_artefact_days_nothing_is_pruned(store: AuditStore, tmp_path: Path) -> None:
    finished(store, tmp_path, "ancient", 3650)
    finished(store, tmp_path, "old", 3000)
    report = prune_artefacts(store, RetentionSettings(), pinned=[])
    assert (report.pruned, report.not_local) == ([], [])
    assert files(tmp_path, "ancient") == ["gallery", "gallery/0.png", "heatmap.npy", "report.json"]


def test_after_audit_applies_the_policy(store: AuditStore, tmp_path: Path) -> None:
    old = finished(store, tmp_path, "old", 40)
    kept = finished(store, tmp_path, "kept", 35)
    latest = finished(store, tmp_path, "latest", 0)
    cfg = AuditConfig.model_validate(
        {
            "model": {"uri": "m"},
            "samples": [{"name": "p", "uri": "p"}],
            "retention": {"artefact_days": 30, "keep_last": 1},
            "drift": {"baseline_audit_id": kept},
        }
    )
    assert after_audit(store, latest, cfg) == []  # no alert rules
    assert files(tmp_path, "old") == []
    assert len(files(tmp_path, "kept")) == 4 and len(files(tmp_path, "latest")) == 4
    assert {a.kind for a in store.artefacts(old) if a.pruned_at} == {"report", "gallery", "heatmap"}


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("/srv/artefacts/12/gallery", "/srv/artefacts/12/gallery"),
        ("file:///srv/artefacts/12/heat%20map.npy", "/srv/artefacts/12/heat map.npy"),
        ("relative/report.json", "relative/report.json"),
        ("mlflow-artifacts:/1/2/relevance.npy", None),
        ("s3://bucket/key.png", None),
    ],
)
def test_only_local_paths_are_deleted(uri: str, path: str | None) -> None:
    assert local_path(uri) == (None if path is None else Path(path))
