"""Counterfactual confirmation (auditor.checks.counterfactual, auditor.audit.counterfactual_stage):
a suspected cue transplanted into samples of the other class moves their predictions to the
shortcut class, beyond its control (a random region of the same size; a donor of the
recipient's own class), on hand-wired detectors whose cue is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from auditor.audit.counterfactual_stage import counterfactual_stage
from auditor.audit.passes import relevance_pass
from auditor.audit.stages import PassRunner
from auditor.audit.worker import WorkerModel
from auditor.checks.counterfactual import flip_test, transplant
from auditor.checks.probes.base import build_probe
from auditor.config import CounterfactualSettings, Preprocess
from auditor.data.images import ArrayImages
from auditor.execution import LocalExecutor
from auditor.model.graph import ModelGraph
from auditor.results import Finding

from .evidence_examples import example_evidence

SIZE, N = 32, 80
PREPROCESS = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class CueDetector(nn.Module):
    """'fake' (class 1) when its cue is present: `corner`, a red top-left 8 x 8 cell (a conv
    over the 4 x 4 grid of 8 x 8 blocks reads each block's red minus green mean, the head reads
    block 0); `tint`, red above green over the whole image."""

    def __init__(self, cue: str):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 8, stride=8), nn.ReLU())
        self.fc = nn.Linear(2 * 16, 2)
        with torch.no_grad():
            conv = self.features[0]
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0] = 1 / 64
            conv.weight[0, 1] = -1 / 64
            conv.weight[1, 1] = 1 / 64  # a second, uninformative channel
            self.fc.weight.zero_()
            cells = [0] if cue == "corner" else list(range(16))
            for cell in cells:
                self.fc.weight[1, cell] = 20.0 / len(cells)
            self.fc.bias.copy_(torch.tensor([0.0, -4.0]))

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def _images(cue: str) -> tuple[np.ndarray, np.ndarray]:
    """Grey noise; the second half carries the cue (fakes)."""
    rng = np.random.default_rng(0)
    x = np.clip(0.4 + 0.1 * rng.standard_normal((N, 3, SIZE, SIZE)), 0, 1).astype(np.float32)
    fake = np.arange(N) >= N // 2
    if cue == "corner":
        x[fake, 0, :8, :8] = 1.0
    else:
        x[fake, 0] = np.clip(x[fake, 0] + 0.4, 0, 1)
        x[fake, 1] = np.clip(x[fake, 1] - 0.2, 0, 1)
    return x, fake.astype(np.int64)


def _audit(cue: str, probe: dict, settings: CounterfactualSettings):
    images, labels = _images(cue)
    graph = ModelGraph.from_module(CueDetector(cue).eval(), torch.from_numpy(images[:2]))
    model = WorkerModel(graph.split("features"), PREPROCESS, "epsilon_plus", 1e-6)
    runner = PassRunner(LocalExecutor(), model, ArrayImages(images), 16, 0)
    base = relevance_pass(LocalExecutor(), model, runner.images, None, 16, gallery_size=2)
    assert (base.logits.argmax(1).numpy() == labels).all()  # the detector uses its cue
    built = build_probe(probe)
    finding = Finding(
        "spurious_channels", "medium", "channels of 'fake'",
        example_evidence("spurious_channels", class_index=1, class_name="fake", channels=[0]),
        probe=built.label,
    )  # fmt: skip
    other = Finding("probe_sensitivity", "high", "flips", example_evidence("probe_sensitivity"))
    ids = [f"s{i}" for i in range(N)]
    return counterfactual_stage(runner, base, {built.label: built}, [finding, other], ids, settings)


@pytest.mark.parametrize(
    ("cue", "probe", "control"),
    [
        ("corner", {"name": "patch_occlusion", "cell": 0}, "random_region"),
        ("tint", {"name": "grayscale"}, "same_class_donor"),
    ],
)
def test_transplanted_cue_flips_predictions_beyond_its_control(cue, probe, control):
    confirmed, other = _audit(cue, probe, CounterfactualSettings(recipients=32))

    evidence = confirmed.evidence.counterfactual
    assert evidence.control == control and evidence.n_recipients == 32
    assert evidence.flip_rate > 0.9 and evidence.control_flip_rate < 0.1
    assert evidence.confirmed and evidence.p_value < 1e-6
    assert all(int(r[1:]) < N // 2 for r in evidence.recipients)  # real samples
    assert all(int(d[1:]) >= N // 2 for d in evidence.donors)  # fake donors
    assert confirmed.severity == "high" and "confirms the shortcut" in confirmed.title
    assert other.evidence == example_evidence("probe_sensitivity")  # untouched
    dumped = confirmed.evidence.model_dump(mode="json")
    assert dumped["counterfactual"]["flip_rate"] == evidence.flip_rate


def test_a_cue_the_model_does_not_use_is_not_confirmed_and_lowers_the_severity():
    """The corner detector probed at another cell: pasting that cell moves nothing."""
    (finding, _) = _audit("corner", {"name": "patch_occlusion", "cell": 5}, CounterfactualSettings())

    evidence = finding.evidence.counterfactual
    assert evidence.flip_rate == 0.0 and not evidence.confirmed and evidence.p_value == 1.0
    assert finding.severity == "low" and "does not confirm" in finding.title


def test_disabled_leaves_findings_as_they_are():
    (finding, _) = _audit("tint", {"name": "grayscale"}, CounterfactualSettings(enabled=False))
    assert finding.evidence.counterfactual is None
    assert "counterfactual" not in finding.evidence.model_dump(mode="json")


def test_transplant_pastes_the_donor_cell_and_keeps_the_rest():
    images, _ = _images("corner")
    recipients, donors = torch.from_numpy(images[:4]), torch.from_numpy(images[-4:])
    out = transplant(build_probe({"name": "patch_occlusion", "cell": 0}), recipients, donors)
    torch.testing.assert_close(out[..., 8:, :], recipients[..., 8:, :])
    torch.testing.assert_close(out[..., :8, 8:], recipients[..., :8, 8:])
    assert (out[:, 0, :8, :8] > 0.9).float().mean() > 0.9  # the red cell arrived


def test_mcnemar_counts_discordant_pairs():
    cue = np.array([1, 1, 1, 1, 0, 0, 1, 0])
    control = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    test = flip_test(cue, control, 1, alpha=0.05)
    assert (test.cue_only, test.control_only) == (4, 1)
    assert test.flip_rate == 5 / 8 and test.control_flip_rate == 2 / 8
    assert test.p_value == pytest.approx(6 / 32)  # P(B >= 4), B ~ Binomial(5, 1/2)
    assert not test.confirmed
