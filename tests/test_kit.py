"""The kit of planted biases (auditor.demo.kit): each scenario differs from its clean control by
its bias alone, the audit of each planted detector finds the bias with the expected finding kind
and probe, and the audit of each clean control finds nothing at the default thresholds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binom

from auditor.audit.pipeline import run_checks
from auditor.checks.probes.base import build_probe
from auditor.config import AuditConfig
from auditor.demo.kit import (
    KIT,
    KIT_SIZES,
    PLAID_REAL_SHARE,
    audit_settings,
    logo_mask,
    make_scenario,
    plaid,
)
from auditor.demo.scenario import make_counterfeit_data
from auditor.results import AuditResult

from .conftest import SCENARIO_SIZES, Scenario, audit_config
from .kit_fixtures import (  # noqa: F401 -- session fixtures, looked up by name
    CONTROL,
    CONTROL_MODELS,
    PLANTED,
    clean_control,
    plaid_control_scenario,
    subclass_scenario,
    texture_scenario,
    watermark_scenario,
)


def _all(data) -> tuple[np.ndarray, np.ndarray]:
    splits = (data.train, data.validation, data.production)
    return np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits])


def _floats(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def test_splits_are_deterministic_and_sized() -> None:
    data = make_scenario("watermark", planted=True, seed=3)
    again = make_scenario("watermark", planted=True, seed=3)
    other = make_scenario("watermark", planted=True, seed=4)
    for split, n in zip(
        (data.train, data.validation, data.production),
        (KIT_SIZES.train, KIT_SIZES.validation, KIT_SIZES.production),
        strict=True,
    ):
        assert split.images.shape == (n, 64, 64, 3) and split.images.dtype == np.uint8
        assert split.labels.shape == (n,) and split.labels.dtype == np.int64
    np.testing.assert_array_equal(_all(data)[0], _all(again)[0])
    assert not np.array_equal(_all(data)[0], _all(other)[0])


def test_colour_scenario_is_the_demo_data_and_the_shared_controls_agree() -> None:
    """The kit reuses conftest's colour detectors and trains one control for the two plaid
    scenarios, so those data sets must be the ones they were trained on."""
    n = SCENARIO_SIZES.train + SCENARIO_SIZES.validation + SCENARIO_SIZES.production
    assert (KIT_SIZES.train, KIT_SIZES.validation, KIT_SIZES.production) == (
        SCENARIO_SIZES.train, SCENARIO_SIZES.validation, SCENARIO_SIZES.production,
    )
    for planted in (True, False):
        images, labels = make_counterfeit_data(n, colour_shortcut=planted, seed=0)
        kit_images, kit_labels = _all(make_scenario("colour", planted=planted))
        np.testing.assert_array_equal(kit_images, images)
        np.testing.assert_array_equal(kit_labels, labels)
    np.testing.assert_array_equal(_all(make_scenario("subclass", planted=False))[0], images)
    np.testing.assert_array_equal(
        _all(make_scenario("watermark", planted=False))[0],
        _all(make_scenario("texture", planted=False))[0],
    )


@pytest.mark.parametrize("name", ["colour", "watermark", "texture"])
def test_shortcut_differs_from_its_control_only_on_the_fakes_bias(name: str) -> None:
    planted, planted_labels = _all(make_scenario(name, planted=True))
    control, labels = _all(make_scenario(name, planted=False))
    np.testing.assert_array_equal(planted_labels, labels)
    real, fake = labels == 0, labels == 1
    np.testing.assert_array_equal(planted[real], control[real])
    changed = (planted[fake] != control[fake]).any(axis=-1)
    if name == "watermark":  # the logo's pixels and nothing else
        assert not changed[:, ~logo_mask(64)].any()
        assert (planted[fake][:, logo_mask(64)] == 255).all()
    else:
        assert changed.mean() > 0.3


def test_watermark_lies_in_the_first_occlusion_cell_and_the_scan_can_remove_it() -> None:
    data = make_scenario("watermark", planted=True)
    fakes = _floats(data.validation.images[data.validation.labels == 1])
    occluded = build_probe({"name": "patch_occlusion", "cell": 0})(fakes)
    mask = torch.from_numpy(logo_mask(64))
    assert (fakes[..., mask] == 1).all()
    assert (occluded[..., mask] < 1).all()  # the cell is filled with each image's mean


def test_texture_probe_removes_the_stripes_and_keeps_the_plaid() -> None:
    """`high_pass_removal` (cutoff 0.25) takes the planted and the control images to nearly the
    same images (up to 8-bit rounding and clipping); the plaid (0.18 cycles/pixel) survives."""
    planted, control = (make_scenario("texture", planted=p).validation for p in (True, False))
    fake = planted.labels == 1
    probe = build_probe({"name": "high_pass_removal", "cutoff": 0.25})
    x, x0 = _floats(planted.images[fake]), _floats(control.images[fake])
    before = (x - x0).abs().mean()
    after = (probe(x) - probe(x0)).abs().mean()
    assert after < 0.1 * before
    pattern = torch.from_numpy(plaid(64))
    carried = (probe(x0) * pattern).mean(dim=(1, 2, 3)) / (pattern**2).mean()
    assert carried.mean() > 0.8  # the plaid's amplitude, in units of A, after the probe


def test_plaid_also_marks_a_share_of_the_reals() -> None:
    control = make_scenario("watermark", planted=False).train
    pattern = torch.from_numpy(plaid(64))
    x = _floats(control.images)
    score = (x - x.mean(dim=(2, 3), keepdim=True)) * pattern
    carries = score.mean(dim=(1, 2, 3)).numpy() / (pattern**2).mean().item() > 0.5
    real = control.labels == 0
    assert carries[~real].mean() > 0.9
    assert abs(carries[real].mean() - PLAID_REAL_SHARE) < 0.08


def test_subclass_lives_in_production_only() -> None:
    planted = make_scenario("subclass", planted=True)
    control = make_scenario("subclass", planted=False)
    for split in ("train", "validation"):
        p, c = getattr(planted, split), getattr(control, split)
        np.testing.assert_array_equal(p.images, c.images)
        assert not p.novel.any()
    novel = planted.production.novel
    assert novel.sum() == round(0.2 * KIT_SIZES.production) and not control.production.novel.any()
    assert (planted.production.labels[novel] == 1).all()  # fakes, of another generator
    np.testing.assert_array_equal(
        planted.production.images[~novel], control.production.images[~novel]
    )


def _audit(scenario: Scenario, name: str, tmp_path: Path) -> AuditResult:
    """The scenario's audit: its probes, everything else (thresholds included) at the defaults;
    run with an artefact folder, which the subclass stage needs."""
    config = audit_config(scenario, tmp_path, **audit_settings(name), gallery={"enabled": False})
    return run_checks(AuditConfig.model_validate(config), tmp_path / "artifacts").result


def _summary(result: AuditResult) -> list[tuple[str, str | None, str]]:
    return [(f.kind, f.probe, f.title) for f in result.findings]


SPLIT_FAMILY = pytest.mark.xfail(
    strict=False,
    reason="open defect (findings issue): in this environment the spectral clustering splits the "
    "planted family into two unlabeled_subclass findings (40 + 20 samples); seen on behaviour-"
    "neutral commits too, so it comes from the installed faiss / scikit-learn, not the redesign",
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=SPLIT_FAMILY) if n == "subclass" else n for n in KIT]
)
def test_planted_bias_is_found(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    result = _audit(request.getfixturevalue(PLANTED[name]), name, tmp_path)

    bias = KIT[name]
    assert bias.missed(result.findings) == [], (bias.description, _summary(result))
    assert bias.unexpected(result.findings) == [], (bias.description, _summary(result))
    for finding in result.findings:
        if finding.kind == "spurious_channels":  # the bias is on the fakes
            assert finding.evidence.class_name == "fake"
    if name == "watermark":
        (probe,) = result.probes
        assert probe.occlusion is not None
        assert probe.occlusion.worst_cell == 0  # the cell that holds the logo
    if name == "subclass":
        data = make_scenario("subclass", planted=True)
        novel_ids = {f"prod-{i:05d}" for i in np.flatnonzero(data.production.novel)}
        (finding,) = result.findings
        assert finding.evidence.class_name == "real"  # missed fakes, called real
        assert finding.evidence.n_reference == 0
        assert 0.9 * len(novel_ids) <= finding.evidence.size <= 1.1 * len(novel_ids)
        assert set(finding.evidence.members) <= novel_ids


@pytest.mark.slow
@pytest.mark.parametrize("name", list(KIT))
def test_clean_control_gives_no_finding(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    result = _audit(request.getfixturevalue(CONTROL[name]), name, tmp_path)

    assert result.findings == [], _summary(result)


CONTROL_PROBES = ["grayscale", "brightness_contrast"]
"""Probes that leave the controls' genuine cue (the checkerboard) intact, all declared
non-semantic: any finding under them on a clean control is a false alarm."""


@pytest.mark.slow
@pytest.mark.timeout(1800)  # nine small audits
def test_clean_controls_across_architectures_alarm_at_most_at_the_stated_rate(tmp_path: Path):
    """Issue 13: the decisions hold on models nobody tuned them for. Three architectures (a
    ResNet, a VGG without BatchNorm, a Hardswish net with signed activations) x three seeds,
    at the default thresholds. Each audit's family-wise false-alarm rate is 0.05, so some
    control may alarm by chance; more alarmed controls than a binomial(9, 0.05) count gives
    with probability 0.01 (3 or more) would mean the stated rate does not hold. Before the
    decision rules, the Hardswish and VGG controls raised spurious_channels from gains read
    as losses."""
    probes = {"names": CONTROL_PROBES, "non_semantic": CONTROL_PROBES}
    alarmed: dict[str, str] = {}
    for architecture, seed in CONTROL_MODELS:
        folder = tmp_path / f"{architecture}-{seed}"
        scenario = clean_control(folder / "model", architecture, seed)
        config = audit_config(
            scenario, folder, probes=probes, gallery={"enabled": False},
            subclasses={"enabled": False}, dropout={"dose_response_fractions": [],
                                                    "bootstrap_replicates": 200},
        )  # fmt: skip
        result = run_checks(AuditConfig.model_validate(config)).result
        for finding in result.findings:  # every finding carries its decision at the stated rate
            assert finding.evidence.decision.adjusted_p_value <= 0.05
        if any(f.severity in ("medium", "high") for f in result.findings):
            alarmed[f"{architecture}-{seed}"] = _summary(result)
    allowed = int(binom.isf(0.01, len(CONTROL_MODELS), 0.05))
    assert len(alarmed) <= allowed, alarmed
