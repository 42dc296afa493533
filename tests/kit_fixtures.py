"""Session fixtures of the planted-bias kit (auditor.demo.kit): each scenario's detectors, trained
once at the demo trainer's defaults and saved beside their sample sets like conftest's colour
scenarios, whose detectors the kit reuses rather than retrains (see `PLANTED` and `CONTROL`).
The watermark and texture scenarios share their content and genuine cue (the plaid), so their
clean controls are one data set and one detector; the subclass scenario is the clean colour
control's detector and reference with a production set that holds the unseen fakes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest

from auditor.demo.kit import KIT_SIZES, KitData, make_scenario
from auditor.demo.run import DemoSizes, save_npz
from auditor.demo.train import ARCHITECTURES, train_classifier

from .conftest import Scenario

SEED = 0
PLANTED = {
    "colour": "shortcut_scenario",
    "watermark": "watermark_scenario",
    "texture": "texture_scenario",
    "subclass": "subclass_scenario",
}
"""The fixture of each kit scenario's planted detector."""
CONTROL = {
    "colour": "control_scenario",
    "watermark": "plaid_control_scenario",
    "texture": "plaid_control_scenario",
    "subclass": "control_scenario",
}
"""The fixture of each kit scenario's clean control."""


def _production(root: Path, data: KitData) -> Path:
    return save_npz(root / "production.npz", data.production.images, None, "prod")


def _trained(
    root: Path,
    name: str,
    planted: bool,
    *,
    seed: int = SEED,
    sizes: DemoSizes = KIT_SIZES,
    **training: Any,
) -> Scenario:
    """Train a detector on the scenario's training split (`training`: arguments of
    `train_classifier` other than the defaults); save it as a local MLflow model (default pt2
    format) beside the labelled validation set and the unlabeled production set."""
    data = make_scenario(name, planted=planted, seed=seed, sizes=sizes)
    model = train_classifier(data.train.images, data.train.labels, seed=seed, **training)
    model_dir = root / "model"
    example = np.zeros((2, 3, *data.train.images.shape[1:3]), np.float32)
    mlflow.pytorch.save_model(model, str(model_dir), input_example=example)
    validation = data.validation
    return Scenario(
        model=model,
        model_dir=model_dir,
        validation=save_npz(root / "validation.npz", validation.images, validation.labels, "val"),
        production=_production(root, data),
    )


@pytest.fixture(scope="session")
def watermark_scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Fakes carry the plaid and a bright logo in the top-left corner."""
    return _trained(tmp_path_factory.mktemp("watermark"), "watermark", planted=True)


@pytest.fixture(scope="session")
def texture_scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Fakes carry the plaid and fine stripes on their background."""
    return _trained(tmp_path_factory.mktemp("texture"), "texture", planted=True)


@pytest.fixture(scope="session")
def plaid_control_scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """The clean control of the watermark and texture scenarios: fakes carry the plaid only."""
    return _trained(tmp_path_factory.mktemp("plaid-control"), "watermark", planted=False)


@pytest.fixture(scope="session")
def subclass_scenario(
    control_scenario: Scenario, tmp_path_factory: pytest.TempPathFactory
) -> Scenario:
    """The clean detector and reference of `control_scenario`; production holds fakes of an
    unseen generator."""
    data = make_scenario("subclass", planted=True, seed=SEED, sizes=KIT_SIZES)
    return replace(control_scenario, production=_production(tmp_path_factory.mktemp("subclass"), data))


CONTROL_SEEDS = (0, 1, 2)
"""Seeds of the clean controls across architectures (data and training)."""
CONTROL_SIZES = DemoSizes(train=400, validation=100, production=100)
"""Samples per split of those controls: each trains in a few seconds on one core."""


def clean_control(root: Path, architecture: str, seed: int) -> Scenario:
    """The colour scenario's clean control (fakes carry the checkerboard only) as a tiny
    detector of `architecture` (a key of `ARCHITECTURES`, width 4, 3 epochs) trained with
    `seed` on `CONTROL_SIZES`."""
    return _trained(
        root, "colour", planted=False, seed=seed, sizes=CONTROL_SIZES,
        architecture=architecture, width=4, epochs=3,
    )


CONTROL_MODELS = [(a, s) for a in ARCHITECTURES for s in CONTROL_SEEDS]
"""Every (architecture, seed) of the clean controls."""
