"""The probe library: each probe removes its cue and keeps the rest; registry and plug-ins;
probe entries in the config."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from auditor.audit.passes import LayerPass, OcclusionTask
from auditor.audit.stages import PassRunner, PlacedProbe, place_probe
from auditor.audit.worker import WorkerModel
from auditor.checks.probes import base, transforms
from auditor.checks.probes.base import PROBES, Probe, build_probe, check_probe_class
from auditor.checks.probes.neutral import (
    change_norms,
    donor_rows,
    pick_donors,
    transplanted_control,
)
from auditor.checks.probes.occlusion import PatchOcclusion, occlusion_summary
from auditor.checks.probes.transforms import (
    Blur,
    BorderMask,
    BrightnessContrast,
    HighPassOnly,
    HighPassRemoval,
    Jpeg,
    grayscale,
    jpeg_round_trip,
)
from auditor.config import Preprocess, load_config
from auditor.data.images import ArrayImages
from auditor.execution import LocalExecutor
from auditor.model.graph import SplitModel

from .plugins import fresh_registry, install_plugin

torch.set_num_threads(1)
SIZE = 32


def _images(seed: int = 0, n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _smooth(n: int = 4) -> torch.Tensor:
    """Horizontal ramps with a different slope per channel: mostly low frequencies."""
    ramp = torch.linspace(0.1, 0.9, SIZE)
    image = torch.stack([ramp, ramp.flip(0), 0.5 + 0.3 * (ramp - 0.5)]).reshape(3, 1, SIZE)
    return image.expand(n, 3, SIZE, SIZE).contiguous()


def _energy(images: torch.Tensor, low: float, high: float) -> float:
    """Spectral energy of the mean-free images in the band low < |f| <= high (cycles/pixel)."""
    spectrum = torch.fft.fft2(images - images.mean(dim=(2, 3), keepdim=True)).abs() ** 2
    radius = transforms._radial_frequency(SIZE, SIZE)
    return float(spectrum[..., (radius > low) & (radius <= high)].sum())


def test_grayscale_makes_the_channels_equal_and_keeps_luminance():
    x = _images()
    y = build_probe("grayscale")(x)
    assert torch.equal(y, grayscale(x))
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(y[:, 0], luma, atol=1e-6)


def test_blur_removes_high_frequencies_and_keeps_the_mean():
    x = _images()
    y = Blur(sigma=2.0)(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    assert _energy(y, 0.25, 1.0) < 0.01 * _energy(x, 0.25, 1.0)
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02)
    assert torch.allclose(Blur(sigma=1.0)(_smooth()), _smooth(), atol=0.01)  # ramps pass


def test_high_pass_removal_keeps_only_frequencies_below_the_cutoff():
    x = 0.5 + 0.1 * (_images() - 0.5)  # stays inside [0, 1]: no clipping
    y = HighPassRemoval(cutoff=0.125)(x)
    assert _energy(y, 0.125, 1.0) < 1e-8 * _energy(x, 0.125, 1.0)
    assert _energy(y, 0.0, 0.125) == pytest.approx(_energy(x, 0.0, 0.125), rel=1e-4)


def test_high_pass_only_removes_low_frequencies_but_keeps_the_mean():
    x = 0.5 + 0.1 * (_images() - 0.5) + 0.2 * (_smooth() - 0.5)
    y = HighPassOnly(cutoff=0.125)(x)
    assert _energy(y, 0.0, 0.125) < 1e-8 * _energy(x, 0.0, 0.125)
    assert _energy(y, 0.125, 1.0) == pytest.approx(_energy(x, 0.125, 1.0), rel=1e-4)
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-5)


def test_jpeg_changes_fine_detail_more_than_smooth_images():
    noisy, smooth = _images(), _smooth()
    jpeg = Jpeg(quality=30)
    change = {
        name: float((jpeg(x) - x).abs().mean())
        for name, x in (("noisy", noisy), ("smooth", smooth))
    }
    assert change["noisy"] > 5 * change["smooth"]
    assert jpeg(noisy).shape == noisy.shape and jpeg(noisy).dtype == noisy.dtype


def test_jpeg_on_the_thread_pool_is_the_image_by_image_loop_bit_for_bit():
    x = _images()
    pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    looped = np.stack([jpeg_round_trip(image, 30) for image in pixels])
    pooled = Jpeg(quality=30)(x)
    assert torch.equal(pooled, torch.from_numpy(looped).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(pooled, Jpeg(quality=30)(x))


def test_border_mask_fills_the_frame_and_leaves_the_centre():
    x = _images()
    y = BorderMask(width=0.125)(x)  # 4 pixels of 32
    assert torch.equal(y[..., 4:-4, 4:-4], x[..., 4:-4, 4:-4])
    mean = x.mean(dim=(2, 3))
    for frame in (y[..., :4, :], y[..., -4:, :], y[..., :, :4], y[..., :, -4:]):
        assert torch.allclose(frame, mean[..., None, None].expand_as(frame))
    assert (BorderMask(width=0.125, fill=0.0)(x)[..., 0, :] == 0).all()


def test_brightness_contrast_fixes_each_image_mean_and_std_and_keeps_its_pattern():
    x = 0.2 + 0.3 * _images()  # dim, low contrast
    x[1] = 0.6 + 0.1 * x[1]  # bright, lower contrast
    y = BrightnessContrast(mean=0.5, std=0.2)(x)
    flat = y.flatten(start_dim=1)
    assert torch.allclose(flat.mean(dim=1), torch.full((4,), 0.5), atol=1e-5)
    assert torch.allclose(flat.std(dim=1, unbiased=False), torch.full((4,), 0.2), atol=1e-5)
    centred = x.flatten(start_dim=1) - x.flatten(start_dim=1).mean(dim=1, keepdim=True)
    correlation = torch.nn.functional.cosine_similarity(centred, flat - 0.5, dim=1)
    assert torch.allclose(correlation, torch.ones(4), atol=1e-5)


class _ReadsOneCell(nn.Module):
    """The logit of class 0 is the mean of `cell` (rows, columns); class 1 is constant 0.3."""

    def __init__(self, cell: tuple[slice, slice]):
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x[:, :, self.cell[0], self.cell[1]].mean(dim=(1, 2, 3))
        return torch.stack([score, torch.full_like(score, 0.3)], dim=1)


def test_patch_occlusion_finds_the_one_cell_the_model_reads():
    """The logit of class 0 is the content of cell 6 (row 1, column 2 of a 4 x 4 grid); the
    model is sensitive there and nowhere else. The scan is the streamed `OcclusionTask` (per
    sample and cell) summarised by `occlusion_summary`."""
    cell = slice(8, 16), slice(16, 24)
    head = _ReadsOneCell(cell)
    model = WorkerModel(SplitModel("input", nn.Identity(), head), Preprocess(), "epsilon", 1e-6)

    x = 0.2 * _images()
    x[:, :, cell[0], cell[1]] = 1.0  # a bright mark: the shortcut
    images = ArrayImages(x.numpy())
    base = head(x)

    def scan_with(batch_size: int):
        def scan(probe: PatchOcclusion):
            task = OcclusionTask(probe, base.numpy())
            out = LocalExecutor().run(task, model, images, batch_size)
            assert out["margin_lost"].shape == out["flipped"].shape == (len(x), probe.grid**2)
            return occlusion_summary(out["margin_lost"], out["flipped"], probe)

        return scan

    scan = scan_with(3)(PatchOcclusion(grid=4))
    assert scan.worst_cell == 6 and scan.grid == 4
    drops = torch.tensor(scan.margin_drop)
    assert drops[1, 2] > 1 and scan.flip_rate[1][2] == 1.0
    drops[1, 2] = 0
    assert (drops == 0).all() and sum(map(sum, scan.flip_rate)) == 1.0
    assert scan.concentration > 1
    runner = PassRunner(LocalExecutor(), model, images, batch_size=8, seed=0)
    unprobed = LayerPass(base, torch.zeros(len(x), 3))
    placed = place_probe(PatchOcclusion(grid=4), runner, unprobed)
    assert placed == PlacedProbe(PatchOcclusion(grid=4, cell=6), scan)
    assert placed.probe.label == "patch_occlusion(cell=6)"
    assert place_probe(Blur(), runner, unprobed) == PlacedProbe(Blur(), None)
    with pytest.raises(ValueError, match="scans the grid"):
        PatchOcclusion()(x)


def test_occlusion_summary_averages_each_cell_over_the_samples():
    lost = np.array([[0.0, 0.5, 2.0, 0.0], [0.0, 1.5, 0.0, 0.0]])
    flipped = np.array([[False, False, True, False], [False, True, False, False]])
    summary = occlusion_summary(lost, flipped, PatchOcclusion(grid=2))
    assert summary.grid == 2 and summary.worst_cell == 1  # ties: the first cell
    assert summary.margin_drop == [[0.0, 1.0], [1.0, 0.0]]
    assert summary.flip_rate == [[0.0, 0.5], [0.5, 0.0]]


def test_builtin_probes_are_registered_and_built_from_config_entries():
    assert set(PROBES.names()) >= {
        "grayscale", "blur", "high_pass_removal", "high_pass_only", "jpeg", "border_mask",
        "brightness_contrast", "patch_occlusion",
    }  # fmt: skip
    assert all(isinstance(build_probe(name), Probe) for name in PROBES.names())
    blur = build_probe({"name": "blur", "sigma": 3})
    assert blur == Blur(sigma=3.0) and blur.label == "blur(sigma=3.0)"
    assert build_probe("blur").label == "blur" and blur.spec == {"name": "blur", "sigma": 3.0}
    assert build_probe(blur.spec) == blur
    for entry, message in [
        ("tint", r"unknown probe 'tint'; known probes: blur, .*grayscale"),
        ({"name": "blur", "radius": 2}, r"probe 'blur' has no parameter \['radius'\]"),
        ({"name": "blur", "sigma": 0}, r"probe 'blur': sigma must be > 0"),
        ({"name": "jpeg", "quality": "high"}, r"probe 'jpeg': quality: Input should be"),
        ({"sigma": 2}, "needs a 'name'"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_probe(entry)
    assert "tint" not in PROBES


@pytest.fixture
def registry(monkeypatch):
    """The probe registry, restored after the test: a fresh `PROBES` with the built-ins."""
    return fresh_registry(monkeypatch, base, "PROBES", check_probe_class)


def test_a_team_registers_its_own_probe(registry):
    @registry.register("invert")
    @dataclass(frozen=True)
    class Invert(Probe):
        name = "invert"
        description = "remove polarity: 1 - x"
        strength: float = 1.0

        def __call__(self, images, rng=None):
            return images + self.strength * (1 - 2 * images)

    assert registry.get("invert").description == "remove polarity: 1 - x"
    x = _images()
    assert torch.allclose(
        build_probe({"name": "invert", "strength": 0.5})(x), torch.full_like(x, 0.5)
    )
    assert torch.allclose(build_probe("invert")(x), 1 - x)

    @dataclass(frozen=True)
    class Other(Invert):
        description = "another invert"

    with pytest.raises(ValueError, match="registered twice"):
        registry.add("invert", Other)
    with pytest.raises(TypeError, match="is named 'invert', not 'inverse'"):
        registry.add("inverse", Invert)

    @dataclass(frozen=True)
    class NoDefault(Probe):
        name = "no_default"
        description = "a parameter without default"
        level: float

        def __call__(self, images, rng=None):
            return images

    with pytest.raises(TypeError, match="needs a default"):
        registry.add("no_default", NoDefault)


def test_probes_of_installed_distributions_are_discovered(registry, tmp_path, monkeypatch, caplog):
    """A distribution on the path declares a probe in the `relevance_auditor.probes` entry
    point group; it is found by name without being imported first. A broken plug-in is skipped
    with a warning."""
    install_plugin(
        tmp_path,
        monkeypatch,
        "team_probes",
        """
        from dataclasses import dataclass
        from auditor.checks.probes.base import Probe

        @dataclass(frozen=True)
        class Posterize(Probe):
            name = "posterize"
            description = "remove fine intensity steps"
            levels: int = 4

            def __call__(self, images, rng=None):
                return (images * (self.levels - 1)).round() / (self.levels - 1)
        """,
        {
            "relevance_auditor.probes": {
                "posterize": "team_probes:Posterize",
                "broken": "team_probes_missing:Nothing",
            }
        },
    )
    assert "team_probes" not in sys.modules

    with caplog.at_level(logging.WARNING, logger="auditor.registry"):
        probe = build_probe({"name": "posterize", "levels": 2})
    assert probe.label == "posterize(levels=2)"
    assert set(probe(_images()).unique().tolist()) <= {0.0, 1.0}
    assert "posterize" in registry.names() and "broken" not in registry.names()
    assert "probe plug-in broken = team_probes_missing:Nothing not loaded" in caplog.text

    probes_yaml = "probes: {names: [grayscale, {name: posterize, levels: 2}]}\n"
    config = load_config(_write_config(tmp_path, probes_yaml))
    assert [build_probe(entry) for entry in config.probes.names][1] == probe


def _write_config(tmp_path, probes_yaml: str):
    path = tmp_path / "audit.yaml"
    path.write_text(
        "model: {uri: /models/detector}\n"
        "samples: [{name: validation, uri: /data/validation.npz}]\n" + probes_yaml
    )
    return path


def test_config_accepts_registered_probes_with_parameters(tmp_path):
    probes_yaml = (
        "probes:\n"
        "  names: [grayscale, {name: blur, sigma: 3.0}, jpeg]\n"
        "  non_semantic: [grayscale, jpeg]\n"
    )
    config = load_config(_write_config(tmp_path, probes_yaml))
    labels = [build_probe(entry).label for entry in config.probes.names]
    assert labels == ["grayscale", "blur(sigma=3.0)", "jpeg"]
    assert config.probes.non_semantic == ["grayscale", "jpeg"]
    assert load_config(_write_config(tmp_path, "")).probes.names == ["grayscale"]
    again = tmp_path / "again.yaml"
    again.write_text(config.to_yaml())
    assert load_config(again) == config


@pytest.mark.parametrize(
    ("probes_yaml", "message"),
    [
        (
            "probes: {names: [grayscale, sharpen]}",
            r"probes\.names\.1: .*unknown probe 'sharpen'; known probes: blur, border_mask",
        ),
        ("probes: {non_semantic: [colour]}", r"probes\.non_semantic\.0: .*unknown probe 'colour'"),
        ("probes: {names: [{name: blur, sigma: -1}]}", r"probe 'blur': sigma must be > 0"),
        ("probes: {names: [blur, {name: blur, sigma: 2.0}]}", r"listed twice .*\['blur'\]"),
    ],
)
def test_config_names_unknown_probes_and_the_known_ones(tmp_path, probes_yaml, message):
    from auditor.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(_write_config(tmp_path, probes_yaml + "\n"))


def _near_the_box_bounds(seed: int) -> torch.Tensor:
    """Images whose pixels sit within 0.05 of 0 or of 1 (dark and saturated regions)."""
    generator = torch.Generator().manual_seed(seed)
    near = 0.05 * torch.rand((4, 3, 16, 16), generator=generator)
    high = torch.rand((4, 3, 16, 16), generator=generator) > 0.5
    return torch.where(high, 1.0 - near, near)


def test_control_changes_each_image_as_much_as_the_probe_within_the_box():
    """Near 0 and 1 clipping would cut a donor's change short; the control still moves each
    image by the probe's own L2 norm, along the donor's change, and stays in [0, 1]."""
    images = _near_the_box_bounds(0)
    probed = grayscale(images)
    size = change_norms(images, probed)
    donors = (probed - images).flip(0)  # each image gets another image's colour removal
    control = transplanted_control(images, size, donors)
    assert control.min() >= 0.0 and control.max() <= 1.0
    torch.testing.assert_close(change_norms(images, control), size, rtol=1e-3, atol=0.0)
    moved = (control - images).flatten(1)
    cosine = torch.nn.functional.cosine_similarity(moved, donors.flatten(1), dim=1)
    assert (cosine > 0.5).all()  # the donor's change, not the image's own


def test_control_stops_at_the_box_corner_when_the_norm_is_out_of_reach():
    """A size beyond the farthest point of [0, 1] along the donor's change: every pixel it
    moves at its bound (0 or 1), the largest change the box allows; a donor the probe left
    unchanged gives no change."""
    images = _near_the_box_bounds(1)
    donors = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    control = transplanted_control(images, torch.full((4,), 1e3), donors)
    assert set(control.unique().tolist()) <= {0.0, 1.0}
    assert (change_norms(images, control) < 1e3).all()
    unchanged = transplanted_control(images, torch.full((4,), 2.0), torch.zeros_like(images))
    assert torch.equal(unchanged, images)


def test_donors_come_from_another_predicted_class():
    predicted = np.array([0, 0, 0, 1, 1, 2, 0, 1])
    donors = donor_rows(predicted, per_class=2, seed=0)
    assert sorted(np.bincount(predicted[donors]).tolist()) == [1, 2, 2]
    picks = pick_donors(np.arange(8), predicted, donors, seed=0)
    assert (predicted[donors[picks]] != predicted).all()
    np.testing.assert_array_equal(picks, pick_donors(np.arange(8), predicted, donors, seed=0))
    alone = np.zeros(4, dtype=int)  # one predicted class: another image of it
    picks = pick_donors(np.arange(4), alone, np.arange(4), seed=0)
    assert (picks != np.arange(4)).all()
