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
