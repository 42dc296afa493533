"""Pre-flight: every input of an audit is checked against the model before the first pass, so
that a bad one fails in seconds as one `AuditorError` line instead of after the passes."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from auditor.config import AuditConfig
from auditor.data.samples import SampleSet, normalize
from auditor.errors import (
    AuditorError,
    ConfigError,
    LayerNotAuditableError,
    LayerNotFoundError,
    ModelLoadError,
    ReportError,
    SampleError,
)
from auditor.model.graph import ModelGraph, SplitModel
from auditor.model.tokens import TOKEN_RANK
from auditor.relevance import LRP, composite

LAYER_FIX = "choose a convolutional block, see `auditor layers`"


def check_inputs(graph: ModelGraph, split: SplitModel, samples: SampleSet, config: AuditConfig) -> None:
    """The samples fit the model, the audited layer has channels over space, top-k leaves room
    for random-k among them, and the labels are classes the model can predict."""
    activation, logits = check_fit(graph, split, samples, config)
    shape = tuple(activation.shape)
    if not is_spatial(shape):
        raise LayerNotAuditableError(
            f"layer '{split.layer}' has outputs of shape {shape_text(shape)} with no spatial "
            "channels (channel relevance, dropout and occlusion need N x C x H x W, or tokens "
            "N x T x D)",
            LAYER_FIX,
        )
    top_k_size(shape[1], config)
    check_labels(samples, logits.shape[1])
    check_relevance(split, config)


def check_relevance(split: SplitModel, config: AuditConfig) -> None:
    """LRP binds a rule to every operation it propagates through: the head above the audited
    layer (channel relevance) and, for the channel galleries' heatmaps, the trunk below it. An
    operation without a rule is a `RelevanceError` naming it, its node and its module path, in
    seconds rather than after the first pass."""
    rules = composite(config.relevance.composite, config.relevance.epsilon)
    LRP(split.head, rules)
    if config.gallery.enabled:
        LRP(split.trunk, rules)


def top_k_size(n_channels: int, config: AuditConfig) -> int:
    """k of top-k on a layer of `n_channels`: `channels.top_k`, else `top_k_fraction` of the
    channels; `ConfigError` unless the other channels hold at least k for random-k."""
    k = config.channels.top_k or max(1, round(config.channels.top_k_fraction * n_channels))
    if 2 * k > n_channels:
        raise ConfigError(
            f"channels.top_k = {k} leaves fewer than k of the {n_channels} channels for random-k",
            f"use top_k <= {n_channels // 2}",
        )
    return k


def shape_text(shape: tuple[int, ...]) -> str:
    """A batch shape with its batch dimension as N: `N x 32 x 16 x 16`."""
    return " x ".join(["N", *(str(d) for d in shape[1:])])


def is_spatial(shape: tuple[int, ...]) -> bool:
    """Outputs of `shape` are channels over space: N x C x H x W, or a token layer's N x T x D
    (the audit sees it channels first, `auditor.model.tokens`)."""
    return len(shape) in (4, TOKEN_RANK)


@dataclass(frozen=True)
class LayerStatus:
    """One layer of the model as `auditor layers` lists it."""

    name: str
    shape: tuple[int, ...] | None
    problem: str | None  # None: auditable


def layer_statuses(graph: ModelGraph, example: torch.Tensor) -> list[LayerStatus]:
    """Every layer of the model with its output shape on `example` and, where it cannot be
    audited, why: no spatial channels, or a cut that does not separate the model (a layer
    inside a residual branch)."""
    shapes = graph.layer_shapes(example)
    statuses = []
    for name in graph.layers:
        shape = shapes.get(name)
        problem = None if shape is None or is_spatial(shape) else "no spatial channels"
        if problem is None:
            try:
                graph.split(name)
            except LayerNotFoundError:
                problem = "does not separate the model (inside a residual branch)"
        statuses.append(LayerStatus(name, shape, problem))
    return statuses


def check_fit(
    graph: ModelGraph, split: SplitModel, samples: SampleSet, config: AuditConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fail early, with the sample size in the message, when the samples do not fit the model:
    another size than the one the graph was exported for, or a forward pass that fails. Returns
    the layer's activation and the logits of the first two samples."""
    shape = (config.preprocess.channels or 3, *samples.images.shape[2:])
    size = "x".join(str(s) for s in shape)
    expected = graph.input_shape
    fix = "set preprocess.size to the model's input size"
    if expected is not None and any(e is not None and e != s for e, s in zip(expected, shape)):
        wanted = "x".join("?" if e is None else str(e) for e in expected)
        if expected[0] is not None and expected[0] != shape[0]:
            fix = f"set preprocess.channels to {expected[0]}"
        raise SampleError(
            f"samples of size {size} do not fit model {config.model.uri}, which takes {wanted}", fix
        )
    batch = normalize(torch.from_numpy(samples.images[:2]), config.preprocess)
    try:
        return _forward(split, batch)
    except Exception as err:  # shape errors surface as several exception types
        if len(batch) > 1 and _runs(split, batch[:1]):
            raise ModelLoadError(
                f"model {config.model.uri} runs on one sample but not on a batch of "
                f"{len(batch)}: it was exported for batch size 1 ({str(err).splitlines()[0]})",
                "export it with a dynamic batch dimension (torch.onnx.export dynamic_axes, "
                "or an MLflow input_example of 2 or more samples)",
            ) from err
        raise SampleError(
            f"samples of size {size} do not fit model {config.model.uri}: "
            f"{str(err).splitlines()[0]}",
            fix,
        ) from err


def _forward(split: SplitModel, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        activation = split.trunk(batch)
        return activation, split.head(activation)


def _runs(split: SplitModel, batch: torch.Tensor) -> bool:
    try:
        _forward(split, batch)
    except Exception:  # noqa: BLE001 -- any failure: the sample does not fit either
        return False
    return True


def check_labels(samples: SampleSet, n_outputs: int) -> None:
    """Every known label (>= 0) is one of the model's `n_outputs` classes: a label it cannot
    predict would count as an error of every sample and get a per-class recall of its own."""
    labels = np.asarray(samples.labels)
    bad = labels >= n_outputs
    if not bad.any():
        return
    sets = np.asarray(samples.set_names)[bad]
    named = ", ".join(dict.fromkeys(sets.tolist()))
    values = ", ".join(str(v) for v in np.unique(labels[bad])[:5])
    raise SampleError(
        f"sample set {named} has labels {values} but the model has {n_outputs} outputs "
        f"(classes 0..{n_outputs - 1})",
        "use labels the model predicts (0-based class indices), -1 for unknown",
    )


def check_outputs(config: AuditConfig, artifact_dir: Path, report_path: Path | None) -> None:
    """Every folder the audit writes to can be written: the audit's artefact folder, the
    report's folder and the executor's scratch folder (default: the system's temporary one)."""
    check_writable(artifact_dir, "artifacts_dir", "set artifacts_dir to a writable folder", ConfigError)
    if report_path is not None:
        if report_path.is_dir():
            raise ReportError(f"report path {report_path} is a folder", "pass --report a file path")
        check_writable(
            report_path.parent, f"the folder of report {report_path}",
            "pass --report a path in a writable folder", ReportError,
        )  # fmt: skip
    scratch = config.executor.scratch_dir or tempfile.gettempdir()
    check_writable(
        Path(scratch), "executor.scratch_dir", "set executor.scratch_dir to a writable folder",
        ConfigError,
    )  # fmt: skip


def check_writable(folder: Path, what: str, fix: str, error: type[AuditorError]) -> None:
    """`folder` is, or can be created as, a folder the auditor writes in: its nearest existing
    ancestor is a folder in which a file can be created. Nothing stays: the probe is a temporary
    file, removed at once, and no missing folder is created."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise error(f"{what} {folder} cannot be created: {existing} is a file, not a folder", fix)
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".auditor-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise error(f"{what} {folder} is not writable: {err.strerror} in {existing}", fix) from err
