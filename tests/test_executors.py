"""Executors: the local (streaming) executor and the Ray executor on a local Ray cluster started
by the tests give the same audit for the same seed; an input error met by a Ray worker reaches
the user as itself; a missing Ray gives one clear error."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.audit.passes import ForwardTask
from auditor.audit.pipeline import run_checks
from auditor.audit.worker import WorkerModel
from auditor.config import AuditConfig, ExecutorSettings, Preprocess
from auditor.data.images import NpyImages
from auditor.errors import ConfigError, SampleError
from auditor.execution import LocalExecutor, make_executor
from auditor.model.graph import ModelGraph
from auditor.model.zoo import SmallResNet
from tests.conftest import Scenario, audit_config


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for this module's tests (the executors join it)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()

TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def _numbers(value, path=""):
    """Every number of a nested result, by its path (strings and None compared exactly)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}[{i}]")
    else:
        yield path, value


def _audit(scenario: Scenario, tmp_path: Path, executor: dict):
    config = AuditConfig.model_validate(
        audit_config(scenario, tmp_path, executor=executor, batch_size=48)
    )
    return run_checks(config, tmp_path / "artifacts")


@pytest.mark.slow
def test_ray_executor_gives_the_local_audit(ray_cluster, shortcut_scenario: Scenario, tmp_path):
    local = _audit(shortcut_scenario, tmp_path / "local", {"kind": "local"})
    ray = _audit(
        shortcut_scenario, tmp_path / "ray",
        {"kind": "ray", "address": "local", "num_workers": 2, "cpus_per_worker": 1},
    )
    np.testing.assert_allclose(ray.channel_relevance, local.channel_relevance, **TOLERANCE)
    assert ray.result.channels.top_k == local.result.channels.top_k
    assert [(f.kind, f.probe, f.title) for f in ray.result.findings] == [
        (f.kind, f.probe, f.title) for f in local.result.findings
    ]
    skip = ("timings", "gallery", "subclasses")
    ours = {k: v for k, v in asdict(local.result).items() if k not in skip}
    theirs = {k: v for k, v in asdict(ray.result).items() if k not in skip}
    for (path, a), (other, b) in zip(_numbers(ours), _numbers(theirs), strict=True):
        assert path == other
        if isinstance(a, float) and isinstance(b, float):
            assert b == pytest.approx(a, rel=1e-4, abs=1e-5), path
        else:
            assert a == b, path
    assert local.result.findings, "the shortcut scenario must give findings to compare"


def test_a_workers_input_error_reaches_the_user_as_itself(ray_cluster, tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.zeros((20, 8, 8, 3), np.uint8))
    images = NpyImages(path, label="production.npz", size=None)
    with open(path, "r+b") as f:  # the file shrinks after the audit opened it
        f.truncate(path.stat().st_size - 100)
    graph = ModelGraph.from_module(SmallResNet(width=4).eval(), torch.rand(2, 3, 8, 8))
    model = WorkerModel(graph.split(graph.default_layer()), Preprocess(), "epsilon", 1e-6)
    executor = make_executor(ExecutorSettings(kind="ray", num_workers=1))
    with executor, pytest.raises(SampleError, match=r"production\.npz: rows 16-19 cannot be read"):
        executor.run(ForwardTask("forward"), model, images, batch_size=4)


def test_local_is_the_default_executor():
    assert isinstance(make_executor(ExecutorSettings()), LocalExecutor)


def test_ray_executor_without_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"Ray is not installed.*relevance-auditor\[ray\]"):
        make_executor(ExecutorSettings(kind="ray"))
