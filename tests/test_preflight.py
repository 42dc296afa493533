"""Pre-flight through the real `auditor` command: a bad input, output or store fails before
the first pass with exit 2 and one line `error: ... -- fix: ...`, creating nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .conftest import Scenario, audit_config
from .test_cli import assert_clean_failure, auditor, write_config

pytestmark = pytest.mark.slow

FIRST_PASS = "relevance at layer"  # the relevance pass's progress bar


def assert_failed_before_passes(result, tmp_path: Path, *needles: str) -> None:
    assert_clean_failure(result, tmp_path, *needles)
    assert " -- fix: " in result.stderr
    assert FIRST_PASS not in result.stderr + result.stdout
    assert not (tmp_path / "audit-artifacts").exists()


def test_labels_the_model_cannot_predict(shortcut_scenario: Scenario, tmp_path):
    with np.load(shortcut_scenario.validation) as arrays:
        images = arrays["images"][:40]
    labels = np.zeros(40, np.int64)
    labels[:3] = 7
    odd = tmp_path / "odd.npz"
    np.savez(odd, images=images, labels=labels)  # no class_names: nothing else catches it
    config = audit_config(shortcut_scenario, tmp_path, samples=[("odd-labels", odd)])
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_failed_before_passes(result, tmp_path, "odd-labels", "labels 7", "2 outputs")


@pytest.mark.parametrize("layer", ["fc", "flatten"])
def test_layer_without_spatial_channels(shortcut_scenario: Scenario, tmp_path, layer):
    config = audit_config(shortcut_scenario, tmp_path, model={"layer": layer})
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_failed_before_passes(
        result, tmp_path, f"layer '{layer}'", "no spatial channels", "auditor layers"
    )


def test_top_k_larger_than_the_layer_allows(shortcut_scenario: Scenario, tmp_path):
    """layer3 has 32 channels: k = 20 leaves 12 for random-k sets of 20 (found after the
    relevance pass before)."""
    config = audit_config(shortcut_scenario, tmp_path, channels={"top_k": 20})
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_failed_before_passes(result, tmp_path, "channels.top_k = 20", "32 channels", "<= 16")


def test_layers_marks_the_auditable_ones(shortcut_scenario: Scenario, tmp_path):
    config = audit_config(shortcut_scenario, tmp_path)
    result = auditor("layers", "--config", str(write_config(tmp_path, config)))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "N x 32 x 16 x 16" in rows["layer3"] and "auditable (default)" in rows["layer3"]
    assert "not auditable" in rows["fc"] and "no spatial channels" in rows["fc"]
    assert "not auditable" in rows["flatten"]
    assert "not auditable" in rows["layer1.0.conv1"] and "residual" in rows["layer1.0.conv1"]
    assert " auditable" in rows["layer2"] and "not auditable" not in rows["layer2"]


def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "plain-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("under", [False, True], ids=["is-a-file", "under-a-file"])
def test_artifacts_dir_that_cannot_be_a_folder(shortcut_scenario: Scenario, tmp_path, under):
    folder = a_file(tmp_path) / "artefacts" if under else a_file(tmp_path)
    config = audit_config(shortcut_scenario, tmp_path, artifacts_dir=str(folder))
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_failed_before_passes(result, tmp_path, "artifacts_dir", str(folder), "is a file")
    assert (tmp_path / "plain-file").read_text() == "not a folder"


def test_report_path_under_a_file(shortcut_scenario: Scenario, tmp_path):
    report = a_file(tmp_path) / "report.json"
    config = write_config(tmp_path, audit_config(shortcut_scenario, tmp_path))
    result = auditor("audit", "--config", str(config), "--report", str(report))
    assert_failed_before_passes(result, tmp_path, str(report), "is a file", "--report")


def test_scratch_dir_under_a_file(shortcut_scenario: Scenario, tmp_path):
    scratch = a_file(tmp_path) / "scratch"
    config = audit_config(shortcut_scenario, tmp_path, executor={"scratch_dir": str(scratch)})
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_failed_before_passes(result, tmp_path, "executor.scratch_dir", str(scratch))
