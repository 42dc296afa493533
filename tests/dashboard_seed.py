"""A findings database seeded once per test session by real audits, for the dashboard tests
(loaded as a plugin by `pytest_plugins` in those modules, so both share one session fixture).

Two versions of one registered model, `counterfeit-detector`: v1 is the clean control, v2 the
detector with the colour shortcut. Audits: v1, then v2 (findings, and drift against v1), then
v2 again (the same findings: same fingerprints). Every finding and drift alert is stored by a
log sink. Each audit writes its report and its folder (gallery, embeddings, FAISS index, maps).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.audit.lifecycle import run_audit
from auditor.config import AuditConfig

from .conftest import Scenario, audit_config

MODEL = "counterfeit-detector"
ALERTS = {
    "sinks": [{"name": "log", "type": "log"}],
    "rules": [
        {"event": "drift", "min_severity": "low", "sinks": ["log"]},
        {"event": "finding", "min_severity": "high", "sinks": ["log"]},
    ],
}


@dataclass(frozen=True)
class SeededStore:
    """The seeded database and the ids of its audits, oldest first."""

    url: str
    root: Path
    control_audit: int
    shortcut_audit: int
    repeat_audit: int


def _version(scenario: Scenario, folder: Path) -> Scenario:
    """The scenario with its model copied to `folder/MODEL` (the folder name is the model's
    registered name)."""
    model_dir = folder / MODEL
    shutil.copytree(scenario.model_dir, model_dir)
    return Scenario(scenario.model, model_dir, scenario.validation, scenario.production)


@pytest.fixture(scope="session")
def seeded_store(
    shortcut_scenario: Scenario,
    control_scenario: Scenario,
    tmp_path_factory: pytest.TempPathFactory,
) -> SeededStore:
    root = tmp_path_factory.mktemp("dashboard")
    v1, v2 = _version(control_scenario, root / "v1"), _version(shortcut_scenario, root / "v2")
    ids = []
    for n, version in enumerate([v1, v2, v2]):
        config = AuditConfig.model_validate(audit_config(version, root, alerts=ALERTS))
        ids.append(run_audit(config, report_path=root / f"report-{n}.json").audit_id)
    return SeededStore(audit_config(control_scenario, root)["store_url"], root, *ids)
