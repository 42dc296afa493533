"""The demo scenario: planted colour shortcut vs clean control, trained with the real trainer.

The auditor's ``probe_sensitivity`` check compares the prediction flips of a grayscale
probe with those of a neutral perturbation of the same L2 size; these tests pin the
properties that make the demo's findings come out right: the shortcut model flips on
grayscale fakes, the clean control does not, and neither flips under neutral noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditor.demo.scenario import make_counterfeit_data
from auditor.demo.train import MEAN, STD, train_classifier
from auditor.model.zoo import SmallResNet, SmallVGG

TRAIN_N, TEST_N, EPOCHS = 600, 400, 3
LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _predict(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """Predicted classes of float images ``N x H x W x 3`` in [0, 1]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).argmax(1).numpy()


def _grayscale(images: np.ndarray) -> np.ndarray:
    """Luminance of float NHWC images, replicated to 3 channels."""
    return np.repeat((images @ LUMINANCE)[..., None], 3, axis=-1)


def _neutral(images: np.ndarray, like: np.ndarray, seed: int = 0) -> np.ndarray:
    """Images plus Gaussian noise with, per image, the L2 norm of ``like - images``; clipped."""
    noise = np.random.default_rng(seed).standard_normal(images.shape, dtype=np.float32)
    target = np.linalg.norm((like - images).reshape(len(images), -1), axis=1)
    noise *= (target / np.linalg.norm(noise.reshape(len(images), -1), axis=1))[:, None, None, None]
    return np.clip(images + noise, 0.0, 1.0)


def _audit(shortcut: bool) -> dict[str, float]:
    """Train on one data set, measure accuracy and flip rates on held-out data of the same kind."""
    train_x, train_y = make_counterfeit_data(TRAIN_N, colour_shortcut=shortcut, seed=0)
    model = train_classifier(train_x, train_y, seed=0, epochs=EPOCHS)
    test_x, test_y = make_counterfeit_data(TEST_N, colour_shortcut=shortcut, seed=1)
    images = test_x.astype(np.float32) / 255.0
    gray = _grayscale(images)
    pred = _predict(model, images)
    pred_gray = _predict(model, gray)
    pred_noise = _predict(model, _neutral(images, gray))
    fake = test_y == 1
    return {
        "accuracy": float(np.mean(pred == test_y)),
        "gray_flip": float(np.mean(pred_gray != pred)),
        "gray_flip_fake": float(np.mean(pred_gray[fake] != pred[fake])),
        "neutral_flip": float(np.mean(pred_noise != pred)),
    }


@pytest.fixture(scope="module")
def shortcut_metrics() -> dict[str, float]:
    return _audit(shortcut=True)


@pytest.fixture(scope="module")
def clean_metrics() -> dict[str, float]:
    return _audit(shortcut=False)


def test_data_is_deterministic_balanced_uint8() -> None:
    images, labels = make_counterfeit_data(101, colour_shortcut=True, seed=3, size=32)
    again, labels_again = make_counterfeit_data(101, colour_shortcut=True, seed=3, size=32)
    assert images.shape == (101, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1}
    assert abs(int(labels.sum()) - 50) <= 1
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, labels_again)
    other, _ = make_counterfeit_data(101, colour_shortcut=True, seed=4, size=32)
    assert not np.array_equal(images, other)


def test_tint_is_the_only_difference_and_carries_no_luminance() -> None:
    tinted, labels = make_counterfeit_data(200, colour_shortcut=True, seed=5)
    clean, clean_labels = make_counterfeit_data(200, colour_shortcut=False, seed=5)
    np.testing.assert_array_equal(labels, clean_labels)
    np.testing.assert_array_equal(tinted[labels == 0], clean[labels == 0])
    tinted_f, clean_f = tinted.astype(np.float32) / 255.0, clean.astype(np.float32) / 255.0
    fake = labels == 1
    colour_shift = np.abs(tinted_f[fake] - clean_f[fake]).mean()
    luminance_shift = np.abs(tinted_f[fake] @ LUMINANCE - clean_f[fake] @ LUMINANCE).mean()
    assert colour_shift > 0.1 and luminance_shift < 0.02


def test_colour_carries_no_label_information_without_shortcut() -> None:
    images, labels = make_counterfeit_data(2000, colour_shortcut=False, seed=6, size=32)
    mean_colour = images.reshape(len(images), -1, 3).mean(axis=1) / 255.0
    gap = np.abs(mean_colour[labels == 1].mean(0) - mean_colour[labels == 0].mean(0))
    assert gap.max() < 0.01


def test_shortcut_model_relies_on_colour(shortcut_metrics: dict[str, float]) -> None:
    assert shortcut_metrics["accuracy"] >= 0.95, shortcut_metrics
    assert shortcut_metrics["gray_flip_fake"] >= 0.8, shortcut_metrics
    assert shortcut_metrics["neutral_flip"] <= 0.1, shortcut_metrics


def test_clean_model_relies_on_structure(clean_metrics: dict[str, float]) -> None:
    assert clean_metrics["accuracy"] >= 0.9, clean_metrics
    assert clean_metrics["gray_flip"] <= 0.1, clean_metrics
    assert clean_metrics["neutral_flip"] <= 0.1, clean_metrics


def test_training_is_deterministic() -> None:
    images, labels = make_counterfeit_data(192, colour_shortcut=True, seed=7)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    first = train_classifier(images, labels, seed=11, epochs=1)
    second = train_classifier(images, labels, seed=11, epochs=1)
    assert not first.training and not second.training
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    probe = torch.rand(16, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(first(probe), second(probe), rtol=0, atol=0)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("model", [SmallResNet(width=4), SmallVGG()], ids=["resnet", "vgg"])
def test_models_export_with_dynamic_batch(model: torch.nn.Module) -> None:
    model.eval()
    batch = torch.export.Dim("batch", min=1)
    exported = torch.export.export(
        model, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: batch},)
    )
    x = torch.randn(5, 3, 32, 32)
    torch.testing.assert_close(exported.module()(x), model(x))


def test_resnet_layer_paths() -> None:
    names = {name for name, _ in SmallResNet(blocks=(2, 1, 1)).named_modules()}
    expected = {"conv1", "layer1.1.conv2", "layer3", "layer3.0.conv2", "layer3.0.downsample.0"}
    assert expected <= names and "layer4" not in names
