"""Consolidation (auditor.checks.consolidation, auditor.audit.consolidation_stage): findings
about the same cue and class become one verdict, the most specific first; a flagged corner cell
explains the other probes whose flips vanish when the cell is occluded (re-run on hand-wired
detectors whose cue is known: a red corner tag, a global tint)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditor.artefacts.report import build_report
from auditor.audit.consolidation_stage import consolidation_stage
from auditor.audit.passes import relevance_pass
from auditor.audit.stages import PassRunner, PlacedProbe, ProbeJob, run_probe
from auditor.audit.worker import WorkerModel
from auditor.checks.consolidation import consolidated, explained_by_cell
from auditor.checks.probes.base import build_probe
from auditor.config import ConsolidationSettings
from auditor.data.images import ArrayImages
from auditor.data.samples import SampleSet
from auditor.execution import LocalExecutor
from auditor.model.graph import ModelGraph
from auditor.results import Finding

from .evidence_examples import example_evidence
from .test_counterfactual import PREPROCESS, CueDetector, _images
from .test_store import make_result

N = 80
CELL = "patch_occlusion(cell=0)"


def _finding(kind: str, probe: str) -> Finding:
    if kind == "spurious_channels":
        evidence = example_evidence(kind, class_index=1, class_name="fake", channels=[0])
    else:
        evidence = example_evidence(kind)
    return Finding(kind, "medium", f"{kind} {probe}", evidence, probe=probe)


def _stage(cue: str, probes: list[dict], findings: list[tuple[str, str]]):
    images, labels = _images(cue)
    graph = ModelGraph.from_module(CueDetector(cue).eval(), torch.from_numpy(images[:2]))
    model = WorkerModel(graph.split("features"), PREPROCESS, "epsilon_plus", 1e-6)
    runner = PassRunner(LocalExecutor(), model, ArrayImages(images), 20, 0)
    base = relevance_pass(LocalExecutor(), model, runner.images, None, 20, gallery_size=2)
    samples = SampleSet(images, labels, [f"s{i}" for i in range(N)], None, ["set"] * N, ["real", "fake"])
    runs = [
        run_probe(ProbeJob(PlacedProbe(build_probe(p)), runner, base, samples, [0], [[1]]))
        for p in probes
    ]
    stated = [_finding(kind, probe) for kind, probe in findings]
    return consolidation_stage(runner, base, runs, stated, 0.2, ConsolidationSettings()), runs


CORNER_PROBES = [{"name": "patch_occlusion", "cell": 0}, {"name": "border_mask"}, {"name": "grayscale"}]


def test_a_corner_tag_explains_the_border_and_colour_findings():
    findings, runs = _stage("corner", CORNER_PROBES, [
        ("probe_sensitivity", "border_mask"),
        ("probe_sensitivity", CELL),
        ("probe_sensitivity", "grayscale"),
        ("spurious_channels", CELL),
    ])  # fmt: skip

    labels = [r.result.name for r in runs]
    assert labels[1] == "border_mask"
    head, *support = findings
    assert (head.kind, head.probe, head.supports) == ("spurious_channels", CELL, None)
    assert [f.supports for f in support] == [0, 0, 0]
    assert support[0].probe == CELL and support[0].explanation is None  # the same cue
    for f in support[1:]:  # the probes the cell explains
        e = f.explanation
        assert e.explained and e.explained_by == CELL
        assert e.flip_rate >= 0.45 and e.occluded_flip_rate <= 0.05  # the fakes' flips vanish
        assert e.vanished >= 36 and e.p_value < 1e-9
    report = build_report(1, _result_with(findings))
    assert report["format_version"] == 3
    assert report["verdicts"] == [{"finding": 0, "supporting": [1, 2, 3]}]
    assert report["findings"][2]["explanation"]["explained_by"] == CELL


def test_a_global_tint_is_not_explained_by_the_corner_cell():
    findings, _ = _stage("tint", [{"name": "patch_occlusion", "cell": 0}, {"name": "grayscale"}], [
        ("probe_sensitivity", "grayscale"),
        ("spurious_channels", "grayscale"),
        ("probe_sensitivity", CELL),
    ])  # fmt: skip

    assert [(f.kind, f.probe, f.supports) for f in findings] == [
        ("probe_sensitivity", CELL, None),  # localized first
        ("spurious_channels", "grayscale", None),
        ("probe_sensitivity", "grayscale", 1),
    ]
    assert findings[2].explanation is None  # supports as the same cue, not explained by the cell


def test_flips_that_stay_under_occlusion_are_not_explained():
    rng = np.random.default_rng(0)
    flipped = rng.random(200) < 0.5
    e = explained_by_cell(flipped, flipped.copy(), 0.0, 0.2, 0.01, CELL)
    assert not e.explained and e.p_value == 1.0 and e.remaining_excess == pytest.approx(flipped.mean())
    gone = explained_by_cell(flipped, np.zeros(200, bool), 0.0, 0.2, 0.01, CELL)
    assert gone.explained and gone.vanished == flipped.sum()


def test_other_kinds_head_their_own_verdicts_in_place():
    drift = Finding("explanation_drift", "medium", "drift", example_evidence("explanation_drift"))
    probe = _finding("probe_sensitivity", "blur")
    channel = _finding("spurious_channels", "blur")
    out = consolidated([drift, probe, channel], {})
    assert [(f.kind, f.supports) for f in out] == [
        ("explanation_drift", None), ("spurious_channels", None), ("probe_sensitivity", 1),
    ]  # fmt: skip


def _result_with(findings):
    """A complete AuditResult (the store tests') holding `findings`."""
    result = make_result()
    result.findings[:] = findings
    return result
