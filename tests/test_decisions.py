"""The decision rules of the findings (auditor.checks): signed activation shifts against random
channel sets, each finding's statistic against its null with a stated false-alarm rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditor.checks.findings import FindingThresholds, shift_is_loss
from auditor.checks.probes.effect import null_channel_sets, probe_shift, standardised_losses

THRESHOLDS = FindingThresholds(
    dropout_effect=0.15, probe_excess_flip=0.2, activation_collapse=0.3, false_alarm_rate=0.05
)


def _relu_channels(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    """Per-sample spatial means of ReLU channels: positive, each channel its own level."""
    level = rng.uniform(0.2, 2.0, size=c)
    return np.abs(level * (1 + 0.3 * rng.standard_normal((n, c))))


def _shift(before: np.ndarray, after: np.ndarray, k: int, seed: int = 0):
    random_sets = [list(range(k + i, 2 * k + i)) for i in range(5)]  # outside the top-k
    return probe_shift(
        "probe", torch.from_numpy(before), torch.from_numpy(after), list(range(k)),
        random_sets, n_null=999, seed=seed,
    )


def test_a_gain_is_not_a_loss():
    """Failure 1 (clean VGG, brightness_contrast): every channel gains activation, the top-k a
    little less than the rest (a clipped relative drop read the random mean as -100 % and the
    top-k's -38 % as a 62-point collapse). Gains are negative losses, nothing is clipped."""
    rng = np.random.default_rng(0)
    before = _relu_channels(rng, 60, 64)
    gain = np.where(np.arange(64) < 13, 1.38, 3.5)  # top-k +38 %, the others +250 %
    shift = _shift(before, before * gain, k=13)
    assert shift.top_k_activation_drop == pytest.approx(-0.38, abs=0.02)
    assert all(d < -1.5 for d in shift.random_k_activation_drops)  # not clipped to -1
    assert shift.test.statistic < 0  # the top-k gains: its standardised loss is negative
    assert not shift_is_loss(shift, THRESHOLDS)


def test_signed_channels_are_not_a_ratio_of_signed_sums():
    """Failure 2 (Hardswish, JPEG): 84 of 102 channel means are negative, the signed sum is
    near zero and JPEG's small shift of every channel moved the ratio to its clip, 1.0. The
    standardised shift of the top-k is like that of random sets: no loss."""
    rng = np.random.default_rng(1)
    n, c = 80, 102
    means = np.where(np.arange(c) < 84, -0.2, 0.5) * rng.uniform(0.8, 1.2, size=c)
    rng.shuffle(means)
    before = means + 0.05 * rng.standard_normal((n, c))
    after = before + 0.004 * rng.standard_normal((n, c)) - 0.003  # JPEG: tiny, everywhere
    shift = _shift(before, after, k=20, seed=1)
    assert abs(shift.test.statistic - shift.test.null_mean) < 3 * shift.test.null_sd
    assert shift.test.p_value > 0.05
    assert not shift_is_loss(shift, THRESHOLDS)


def test_a_silenced_top_k_is_a_significant_loss():
    rng = np.random.default_rng(2)
    before = _relu_channels(rng, 60, 32)
    after = before * np.where(np.arange(32) < 6, 0.1, 0.95)
    shift = _shift(before, after, k=6)
    assert shift.top_k_activation_drop == pytest.approx(0.9, abs=0.01)
    assert shift.test.n_null == 999 and shift.test.p_value == pytest.approx(1 / 1000)
    assert shift.test.effect_size > 5
    assert shift_is_loss(shift, THRESHOLDS)


def test_activation_shift_p_value_is_uniform_when_no_channel_set_is_special():
    """Every channel shifts by noise alone: over 400 audits the top-k's p-value falls at or
    below each level about as often as the level says (the stated false-alarm rate)."""
    rng = np.random.default_rng(3)
    p = []
    for sim in range(400):
        before = _relu_channels(rng, 30, 24)
        after = before * (1 + 0.1 * rng.standard_normal((30, 24)))
        losses = standardised_losses(before, after)
        shift = _shift(before, after, k=5, seed=sim)
        assert shift.test.statistic == pytest.approx(losses[:5].mean())
        p.append(shift.test.p_value)
    for level in (0.05, 0.2, 0.5):
        assert np.mean(np.array(p) <= level) == pytest.approx(level, abs=0.04)


def test_null_channel_sets_enumerate_small_layers_and_draw_from_large_ones():
    every = null_channel_sets(6, 2, n_draws=100, seed=0)
    assert len(every) == 15 and len({tuple(s) for s in every}) == 15  # C(6, 2)
    drawn = null_channel_sets(64, 8, n_draws=500, seed=0)
    assert drawn.shape == (500, 8) and drawn.max() < 64
    assert all(len(set(row)) == 8 for row in drawn)
    np.testing.assert_array_equal(drawn, null_channel_sets(64, 8, n_draws=500, seed=0))


def test_findings_stored_before_the_decisions_still_read():
    """Evidence stored by earlier audits (no per-class flips, activation test or decision)
    validates into the current models: the store needs no migration."""
    from auditor.evidence import FINDING_KINDS

    from .evidence_examples import EXAMPLES

    added = {
        "probe_sensitivity": ["class_index", "class_name", "class_excess_flip_rate", "per_class",
                              "decision"],
        "spurious_channels": ["activation_test", "decision"],
    }
    for kind, fields in added.items():
        stored = {k: v for k, v in EXAMPLES[kind].items() if k not in fields}
        if kind == "spurious_channels":
            statistics = dict(stored["dropout"]["statistics"])
            del statistics["n_null"]
            stored["dropout"] = {**stored["dropout"], "statistics": statistics}
        evidence = FINDING_KINDS.get(kind).read(stored)
        assert all(getattr(evidence, f) in (None, []) for f in fields)


class BrightnessShortcut(torch.nn.Module):
    """A detector whose shortcut is global brightness: channel 0 of `features` is the share of
    bright pixels, `relu(2 x - 1)` averaged over R, G, B (inputs normalised to 2 x - 1), the
    others colour differences; class 1 ('bright') when its spatial mean exceeds 0.12."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(4, 2)
        with torch.no_grad():
            weight = torch.tensor(
                [[1 / 3, 1 / 3, 1 / 3], [1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]]
            )
            self.features[0].weight.copy_(weight[:, :, None, None])
            self.features[0].bias.zero_()
            self.fc.weight.copy_(torch.tensor([[0.0, 0, 0, 0], [40.0, 0.5, 0.5, 0.5]]))
            self.fc.bias.copy_(torch.tensor([0.0, -40 * 0.12]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


def _brightness_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random colour images, 32 x 32, with a little texture; class 1 is brighter."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    coarse = rng.uniform(0.3, 0.7, size=(n, 4, 4, 3))
    images = coarse.repeat(8, axis=1).repeat(8, axis=2) + 0.05 * rng.standard_normal((n, 32, 32, 3))
    images += np.where(labels == 1, 0.22, -0.05)[:, None, None, None]
    return np.rint(255 * np.clip(images, 0, 1)).astype(np.uint8), labels


@pytest.fixture(scope="module")
def brightness_audit(tmp_path_factory: pytest.TempPathFactory):
    import mlflow

    from auditor.audit.pipeline import run_checks
    from auditor.config import AuditConfig
    from auditor.demo.run import save_npz

    root = tmp_path_factory.mktemp("brightness")
    model = BrightnessShortcut().eval()
    mlflow.pytorch.save_model(
        model, str(root / "model"), input_example=np.zeros((2, 3, 32, 32), np.float32),
        pip_requirements=["torch"],
    )
    images, labels = _brightness_images(160, seed=0)
    config = {
        "model": {"uri": str(root / "model")},
        "samples": [
            {"name": "validation", "uri": str(save_npz(root / "v.npz", images[:80], labels[:80], "val")),
             "role": "reference"},
            {"name": "production", "uri": str(save_npz(root / "p.npz", images[80:], None, "prod"))},
        ],
        "preprocess": {"mean": [0.5] * 3, "std": [0.5] * 3},
        "probes": {"names": ["brightness_contrast"], "non_semantic": ["brightness_contrast"]},
        "dropout": {"dose_response_fractions": [], "bootstrap_replicates": 200},
        "subclasses": {"enabled": False}, "gallery": {"enabled": False}, "drift": {"enabled": False},
        "artifacts_dir": str(root / "artefacts"), "store_url": f"sqlite:///{root / 'db'}",
        "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
    }
    return model, images, run_checks(AuditConfig.model_validate(config)).result


def test_a_global_shortcut_is_found_against_a_control_of_its_own_kind(brightness_audit):
    """Failure 2: on a model whose shortcut is global brightness, brightness_contrast flips the
    bright class only (reported: 48.5 %, and Gaussian noise of the same L2 norm, the former
    neutral twin, flipped as many: no finding). The transplanted control (another class's
    brightness change, same norm) leaves the bright class alone, and the class asymmetry of
    the flips is the finding, at the stated false-alarm rate."""
    _, _, result = brightness_audit
    (probe,) = result.probes
    flips = {c.class_index: c for c in probe.per_class}
    assert flips[1].flip_rate > 0.9 and flips[0].flip_rate < 0.05
    assert flips[1].control_flip_rate < 0.2
    sensitivity = [f for f in result.findings if f.kind == "probe_sensitivity"]
    assert len(sensitivity) == 1
    evidence = sensitivity[0].evidence
    assert evidence.class_index == 1 and evidence.class_excess_flip_rate > 0.7
    assert evidence.decision.adjusted_p_value < 1e-6
    assert evidence.decision.family_size == 4  # 2 classes x (1 probe + 1 non-semantic probe)
