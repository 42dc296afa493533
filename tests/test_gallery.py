"""Channel galleries: ranking by activation, regions and channel-conditional heatmaps on a
planted model, PNG strips, manifest, artefact links, determinism."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from torch import nn

from auditor.artefacts.gallery_files import GAP, manifest_dict, read_manifest, tile_size
from auditor.audit.gallery_stage import (
    channel_galleries,
    channel_heatmaps,
    gallery_channel_sets,
    layer_relevance,
    peak_positions,
)
from auditor.audit.passes import activation_scores, relevance_pass
from auditor.audit.worker import WorkerModel
from auditor.config import AuditConfig
from auditor.data.samples import SampleSet, normalize
from auditor.execution import LocalExecutor, progress
from auditor.execution.sketches import TopRows
from auditor.model.graph import ModelGraph
from auditor.model.receptive_field import receptive_fields
from auditor.model.zoo import SmallResNet
from auditor.relevance import LRP, composite
from auditor.results import ChannelTable, Finding

from .evidence_examples import example_evidence

torch.set_num_threads(1)
SIZE, PATCH = 32, 4
RULES = composite("epsilon_plus")


class ColourSquares(nn.Module):
    """Hand-built detector: channel 0 of `features` is redness `relu(R - G - B)`, channel 1
    greenness `relu(G - R - B)`, each averaged over 8 x 8 windows at stride 4 (unit (h, w) sees
    rows [4h - 2, 4h + 6)); class 1 reads channel 0, class 0 channel 1 (and wins ties)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 8, stride=4, padding=2), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            colour, window = self.features[0], self.features[2]
            colour.weight.copy_(torch.tensor([[1.0, -1, -1], [-1, 1, -1]]).reshape(2, 3, 1, 1))
            colour.bias.zero_()
            window.weight.zero_()
            window.bias.zero_()
            for c in range(2):
                window.weight[c, c] = 1 / 64
            self.fc.weight.copy_(torch.tensor([[0.0, 64], [64, 0]]))  # logits: window sums
            self.fc.bias.copy_(torch.tensor([0.1, 0.0]))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def _planted_samples() -> tuple[SampleSet, dict[int, tuple[int, int, int, int]]]:
    """16 images of grey-ish noise; six carry a red 4 x 4 square of decreasing intensity, five a
    green one, at different 4-aligned places; shuffled. Returns the samples and, per image with
    a red square, its box (top, left, bottom, right)."""
    rng = np.random.default_rng(0)
    images = np.clip(0.5 + 0.1 * rng.standard_normal((16, 3, SIZE, SIZE)), 0, 1).astype(np.float32)
    squares: dict[int, tuple[int, int, int, int]] = {}
    order = rng.permutation(16)
    for rank, index in enumerate(order[:11]):
        colour = 0 if rank < 6 else 1
        top, left = PATCH * (1 + rank % 6), PATCH * (1 + (rank * 5) % 6)
        images[index, :, top : top + PATCH, left : left + PATCH] = 0.0
        images[index, colour, top : top + PATCH, left : left + PATCH] = 1.0 - 0.1 * (rank % 6)
        if colour == 0:
            squares[int(index)] = (top, left, top + PATCH, left + PATCH)
    labels = np.full(16, -1, dtype=np.int64)
    ids = [f"img-{i:02d}" for i in range(16)]
    return SampleSet(images, labels, ids, None, ["set"] * 16, ["green", "red"]), squares


def _config(**gallery) -> AuditConfig:
    return AuditConfig.model_validate(
        {
            "model": {"uri": "unused"},
            "samples": [{"name": "set", "uri": "unused"}],
            "gallery": {"samples_per_channel": 4, "thumbnail": 64, **gallery},
            "batch_size": 5,
        }
    )


@pytest.fixture(scope="module")
def planted():
    samples, squares = _planted_samples()
    config = _config()
    graph = ModelGraph.from_module(ColourSquares().eval(), torch.from_numpy(samples.images[:2]))
    split = graph.split("features")
    base = relevance_pass(
        LocalExecutor(), _worker(split, config), samples.images, None, config.batch_size,
        gallery_size=config.gallery.samples_per_channel,
    )  # fmt: skip
    return samples, squares, config, split, base


def _worker(split, config: AuditConfig) -> WorkerModel:
    return WorkerModel(
        split, config.preprocess, config.relevance.composite, config.relevance.epsilon
    )


def _galleries(planted, directory: Path, sets=None):
    samples, _, config, split, base = planted
    sets = sets or {"global": [0], "class/green": [1]}
    return channel_galleries(split, samples, base, sets, config, directory, RULES)


def _contains(outer, inner) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def test_top_samples_are_the_largest_activation_scores(planted, tmp_path):
    samples, _, _, split, _ = planted
    result = _galleries(planted, tmp_path)
    with torch.no_grad():
        z = split.trunk(torch.from_numpy(np.asarray(samples.images)))
    direct = z.clamp(min=0).sum(dim=(2, 3)).numpy()
    for gallery in result.channels:
        column = direct[:, gallery.channel]
        ids = [e.sample_index for e in gallery.entries]
        assert ids == list(np.argsort(-column, kind="stable")[:4])
        np.testing.assert_allclose([e.score for e in gallery.entries], column[ids], rtol=1e-5)
        assert [e.sample_id for e in gallery.entries] == [samples.ids[i] for i in ids]
        assert min(e.score for e in gallery.entries) >= np.delete(column, ids).max()


@pytest.mark.parametrize("enabled", [True, False])
def test_the_gallery_shows_bars_for_its_samples_and_heatmaps_unless_quiet(
    planted, tmp_path, monkeypatch, enabled
):
    screen = io.StringIO()
    monkeypatch.setattr(progress, "_console", Console(file=screen, width=200))
    monkeypatch.setattr(progress, "enabled", enabled)
    result = _galleries(planted, tmp_path)
    pairs = sum(len(g.entries) for g in result.channels)
    text = screen.getvalue()
    if not enabled:
        assert text == ""
        return
    assert re.search(r"gallery samples\s.*\d+/\d+ samples", text)
    assert re.search(rf"gallery heatmaps\s.*{pairs}/{pairs} maps\s+[\d,-]+/s\s+eta", text)


def test_top_rows_break_ties_by_sample_order():
    top = TopRows(3, 1)
    top.update(np.arange(4), np.array([[1.0], [3.0], [3.0], [2.0]]))
    rows, values = top.top(0)
    assert rows.tolist() == [1, 2, 3] and values.tolist() == [3.0, 3.0, 2.0]
    activations = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]]])
    assert activation_scores(activations).item() == 1.5


def test_top_rows_in_batches_equal_one_sort():
    """Updating batch by batch, in any order, keeps per column the rows a stable descending
    sort of all values puts first."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 6, size=(50, 4)).astype(float)  # many ties
    expected = np.argsort(-values, axis=0, kind="stable")[:7]

    def check(top: TopRows) -> None:
        for column in range(4):
            rows, kept = top.top(column)
            assert rows.tolist() == expected[:, column].tolist()
            assert kept.tolist() == values[expected[:, column], column].tolist()

    whole = TopRows(7, 4)
    whole.update(np.arange(50), values)
    check(whole)
    batched = TopRows(7, 4)
    for rows in reversed(np.array_split(np.arange(50), 6)):
        batched.update(rows, values[rows])
    check(batched)
    shuffled = TopRows(7, 4)
    for rows in np.array_split(rng.permutation(50), 3):
        shuffled.update(rows, values[rows])
    check(shuffled)
    few = TopRows(7, 4)
    few.update(np.arange(3), values[:3])  # fewer rows than m: all of them, sorted
    assert few.top(1)[0].tolist() == np.argsort(-values[:3, 1], kind="stable").tolist()


def test_relevance_pass_keeps_the_top_activation_scores(planted):
    samples, _, config, split, base = planted
    with torch.no_grad():
        z = split.trunk(normalize(torch.from_numpy(samples.images[:]), config.preprocess))
    scores = activation_scores(z).numpy()
    for channel in range(scores.shape[1]):
        rows, values = base.top_activations.top(channel)
        order = np.argsort(-scores[:, channel], kind="stable")[: config.gallery.samples_per_channel]
        assert rows.tolist() == order.tolist()
        np.testing.assert_allclose(values, scores[order, channel], rtol=1e-5)


def test_planted_red_square_region_and_heatmap(planted, tmp_path):
    samples, squares, config, split, _ = planted
    red = _galleries(planted, tmp_path).channels[0]
    assert red.channel == 0 and red.sets == ["global"]
    brightest = max(squares, key=lambda i: samples.images[i, 0].max())
    assert red.entries[0].sample_index == brightest
    for entry in red.entries:
        assert entry.sample_index in squares
        assert entry.located_by == "relevance" and entry.relevance > 0
        assert _contains(entry.box, squares[entry.sample_index])
        assert (entry.box[2] - entry.box[0], entry.box[3] - entry.box[1]) == (8, 8)

    shown = [e.sample_index for e in red.entries]
    images = normalize(torch.from_numpy(samples.images[shown]), config.preprocess)
    with torch.no_grad():
        activations = split.trunk(images)
    relevance = layer_relevance(LRP(split.head, RULES), activations, None, 3)
    heatmaps = channel_heatmaps(LRP(split.trunk, RULES), images, relevance, [0] * 4, 3)
    for sample, heatmap in zip(shown, heatmaps):
        top, left, bottom, right = squares[sample]
        positive = heatmap.clip(min=0)
        assert positive[top:bottom, left:right].sum() >= 0.8 * positive.sum()
        assert positive.sum() > 0


def test_pngs_have_the_strip_size_and_show_the_heatmap(planted, tmp_path):
    squares = planted[1]
    result = _galleries(planted, tmp_path)
    th, tw = tile_size(SIZE, SIZE, 64)
    assert (th, tw) == (64, 64)
    for gallery in result.channels:
        for name in (gallery.samples_image, gallery.heatmaps_image):
            with Image.open(Path(result.directory) / name) as image:
                assert image.format == "PNG" and image.mode == "RGB"
                assert image.size == (4 * tw + 5 * GAP, th + 2 * GAP)
    red = result.channels[0]
    with Image.open(Path(result.directory) / red.heatmaps_image) as image:
        pixels = np.asarray(image).astype(int)
    top, left, bottom, right = squares[red.entries[0].sample_index]
    scale = th // SIZE
    inside = pixels[GAP + scale * (top + 1) : GAP + scale * (bottom - 1),
                    GAP + scale * (left + 1) : GAP + scale * (right - 1)]  # fmt: skip
    assert (inside[..., 0] > inside[..., 2] + 100).all()  # red: positive relevance


def test_manifest_round_trip_and_artefacts(planted, tmp_path):
    result = _galleries(planted, tmp_path)
    assert Path(result.directory) == (tmp_path / "gallery").resolve()
    assert read_manifest(Path(result.directory) / result.manifest) == result
    kinds = sorted(a.kind for a in result.artefacts)
    assert kinds == ["gallery", "gallery", "gallery_manifest", "heatmap", "heatmap"]
    assert all(Path(a.uri).is_file() for a in result.artefacts)
    written = json.loads((Path(result.directory) / result.manifest).read_text())
    assert written == json.loads(json.dumps(manifest_dict(result)))
    assert written["channels"][1]["entries"][0]["box"] == list(result.channels[1].entries[0].box)


def test_channel_sets_link_findings(planted, tmp_path):
    table = ChannelTable("features", "lrp:epsilon_plus", [0.6, 0.4], top_k=[0], bottom_k=[1])
    evidence = example_evidence("spurious_channels", channels=[1])
    finding = Finding("spurious_channels", "high", "red", evidence, probe="grayscale")
    assert gallery_channel_sets(table, [], [finding], "top_k") == {"global": [0]}
    sets = gallery_channel_sets(table, [], [finding], "all_flagged")
    assert sets == {"global": [0], "finding/0": [1]}
    result = _galleries(planted, tmp_path, sets)
    links = {(a.kind, Path(a.uri).name): a.finding for a in result.artefacts}
    assert links[("gallery", result.channels[1].samples_image)] == 0
    assert links[("heatmap", result.channels[1].heatmaps_image)] == 0
    assert links[("gallery", result.channels[0].samples_image)] is None


def test_deterministic(planted, tmp_path):
    first = _galleries(planted, tmp_path / "a")
    second = _galleries(planted, tmp_path / "b")
    assert manifest_dict(first) == manifest_dict(second)
    for a, b in zip(first.artefacts, second.artefacts):
        assert Path(a.uri).read_bytes() == Path(b.uri).read_bytes()


def test_peak_falls_back_to_activation_without_positive_relevance():
    relevance = torch.tensor([[[0.0, -1.0], [0.5, 0.2]], [[0.0, -1.0], [-0.5, 0.0]]])
    activation = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]]])
    assert peak_positions(relevance, activation) == [((1, 0), "relevance"), ((1, 1), "activation")]


def test_residual_model_with_labels_as_target(tmp_path):
    """On a (random) SmallResNet with BatchNorm and the label as explained class: one gallery
    per channel, boxes are the receptive fields of the peaks, heatmaps render."""
    torch.manual_seed(0)
    model = SmallResNet(width=4, blocks=(1, 1)).eval()
    images = torch.rand(6, 3, 16, 16).numpy()
    samples = SampleSet(images, np.array([0, 1, -1, 1, 0, -1]), [str(i) for i in range(6)],
                        None, ["s"] * 6, None)  # fmt: skip
    config = _config(samples_per_channel=3).model_copy(
        update={"relevance": _config().relevance.model_copy(update={"target": "label"})}
    )
    split = ModelGraph.from_module(model, torch.from_numpy(images[:2])).split("layer2")
    base = relevance_pass(
        LocalExecutor(), _worker(split, config), samples.images, samples.labels,
        config.batch_size, gallery_size=config.gallery.samples_per_channel,
    )  # fmt: skip
    result = channel_galleries(split, samples, base, {"global": [2, 5]}, config, tmp_path, RULES)
    assert [g.channel for g in result.channels] == [2, 5] and result.target == "label"
    for gallery in result.channels:
        assert len(gallery.entries) == 3
        positions = [(gallery.channel, *e.position) for e in gallery.entries]
        assert [e.box for e in gallery.entries] == receptive_fields(split.trunk, (3, 16, 16), positions)
        assert (Path(result.directory) / gallery.heatmaps_image).is_file()
