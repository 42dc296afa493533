"""The heavy passes of an audit, as `PassTask`s an executor maps over batches of samples, and
their reductions. No pass keeps images or layer activations: each batch's activations are
reduced on the worker to per-sample vectors (logits, channel means, channel relevance), and the
gallery's activation scores to a mergeable top-rows sketch.

* `RelevanceTask`: trunk, then LRP through the head: logits, channel means, channel relevance
  [Chandrasegaran2022], gallery scores `s_c = sum_hw max(0, z_c)`.
* `ForwardTask`: trunk and head on (transformed) images: logits and channel means (probes,
  their controls, embeddings at another layer).
* `DropoutTask`: trunk once, then the head once per channel-dropout condition, each on the
  samples of its class ([Chandrasegaran2022]: top-k vs random-k vs bottom-k).
* `OcclusionTask`: the patch-occlusion scan, every cell of the grid per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx

from auditor.audit.worker import WorkerModel
from auditor.checks.dropout import LogitsOf
from auditor.checks.metrics import margin_lost
from auditor.checks.probes.base import Probe
from auditor.checks.probes.neutral import change_norms, pick_donors, transplanted_control
from auditor.checks.probes.occlusion import PatchOcclusion
from auditor.data.images import ImageSource
from auditor.execution import Executor
from auditor.execution.base import BatchResult, Outputs, collect
from auditor.execution.sketches import TopRows
from auditor.relevance import channel_scores

#: a picklable image transform of a batch: (images, rows) -> (transformed, extra outputs)
ImageTransform = Callable[[torch.Tensor, np.ndarray], tuple[torch.Tensor, Outputs]]


@dataclass(frozen=True)
class LayerPass:
    """Logits and, per sample, the spatial mean activation of every channel of the layer."""

    logits: torch.Tensor
    channel_activation: torch.Tensor

    def channel_means(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Mean activation per channel over all samples, or over the samples `index`."""
        rows = self.channel_activation if index is None else self.channel_activation[index]
        return rows.mean(dim=0)


@dataclass(frozen=True)
class RelevancePass(LayerPass):
    """A layer pass with the per-sample channel relevance and, per channel, the samples of
    largest activation score (the gallery's candidates)."""

    channel_relevance: torch.Tensor
    top_activations: TopRows


def spatial_means(activations: torch.Tensor) -> torch.Tensor:
    """N x C: each channel's mean over its spatial positions."""
    return activations.flatten(start_dim=2).mean(dim=2)


def activation_scores(activations: torch.Tensor) -> torch.Tensor:
    """N x C scores `s_c(x) = sum_hw max(0, z[c, h, w])` of N x C x h x w activations."""
    return activations.clamp(min=0).flatten(start_dim=2).sum(dim=2)


def _numpy(values: dict[str, torch.Tensor]) -> Outputs:
    return {name: v.detach().cpu().numpy() for name, v in values.items()}


@dataclass(frozen=True)
class RelevanceTask:
    """Relevance of the layer's channels for the explained class: `targets[row]` where given
    and >= 0, else the predicted class."""

    targets: np.ndarray | None
    description: str = "relevance at layer"

    def __call__(self, model: WorkerModel, images: np.ndarray, rows: np.ndarray) -> Outputs:
        act = model.trunk(model.batch(images))
        target = None if self.targets is None else torch.from_numpy(self.targets[rows]).to(model.device)
        relevance, logits = model.head_lrp.attribute_with_logits(act, target)
        return _numpy(
            {
                "logits": logits,
                "channel_activation": spatial_means(act),
                "channel_relevance": channel_scores(relevance),
                "activation_score": activation_scores(act),
            }
        )


def relevance_pass(
    executor: Executor,
    model: WorkerModel,
    images: ImageSource,
    targets: np.ndarray | None,
    batch_size: int,
    gallery_size: int,
) -> RelevancePass:
    """Run `RelevanceTask` over every sample; activation scores are reduced to the top
    `gallery_size` samples per channel as the batches arrive."""
    top: TopRows | None = None

    def reduce_scores(results: Iterator[BatchResult]) -> Iterator[BatchResult]:
        nonlocal top
        for result in results:
            scores = result.outputs.pop("activation_score")
            if top is None:
                top = TopRows(gallery_size, scores.shape[1])
            top.update(result.rows, scores)
            yield result

    out = collect(
        reduce_scores(executor.map(RelevanceTask(targets), model, images, batch_size)), len(images)
    )
    return RelevancePass(
        logits=torch.from_numpy(out["logits"]),
        channel_activation=torch.from_numpy(out["channel_activation"]),
        channel_relevance=torch.from_numpy(out["channel_relevance"]),
        top_activations=top,
    )


@dataclass(frozen=True)
class ForwardTask:
    """Logits and channel means of the (optionally transformed) images; the transform's extra
    outputs (e.g. the per-image size of a probe's change) are passed through."""

    description: str
    transform: ImageTransform | None = None

    def __call__(self, model: WorkerModel, images: np.ndarray, rows: np.ndarray) -> Outputs:
        batch, extra = model.batch(images), {}
        if self.transform is not None:
            batch, extra = self.transform(batch, rows)
        act = model.trunk(batch)
        return {
            **_numpy({"logits": model.head(act), "channel_activation": spatial_means(act)}),
            **extra,
        }


def layer_pass(
    executor: Executor, model: WorkerModel, images: ImageSource, task: ForwardTask, batch_size: int
) -> tuple[LayerPass, Outputs]:
    """Run a `ForwardTask`: the layer pass and the transform's extra outputs."""
    out = executor.run(task, model, images, batch_size)
    logits, means = out.pop("logits"), out.pop("channel_activation")
    return LayerPass(torch.from_numpy(logits), torch.from_numpy(means)), out


@dataclass(frozen=True)
class ProbeTransform:
    """Apply `probe` with a generator seeded by the audit seed and the batch's first row; also
    output each image's change norm (which sizes its control)."""

    probe: Probe
    seed: int

    def __call__(self, images: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, Outputs]:
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + 500_009 + int(rows[0]))
        probed = self.probe(images.cpu(), rng).to(images.device)
        return probed, {"change_norm": change_norms(images, probed).cpu().numpy()}


@dataclass(frozen=True)
class ControlTransform:
    """A probe's control (`auditor.checks.probes.neutral`): each image gets the probe's change
    of its donor (`donor_changes[pick_donors(...)]`, a donor predicted as another class),
    scaled to the image's own change norm (`sizes[row]`)."""

    sizes: np.ndarray
    donor_changes: np.ndarray
    donors: np.ndarray
    predicted: np.ndarray
    seed: int

    def __call__(self, images: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, Outputs]:
        size = torch.from_numpy(self.sizes[rows]).to(images.dtype)
        picks = pick_donors(rows, self.predicted, self.donors, self.seed)
        changes = torch.from_numpy(self.donor_changes[picks]).to(images.dtype)
        control = transplanted_control(images.cpu(), size, changes)
        return control.to(images.device), {}


@dataclass(frozen=True)
class Condition:
    """A channel-dropout condition: channels `drop` zeroed at the layer, on the samples
    predicted as `class_index` (all samples when None). `drop` is kept sorted, so one channel
    set is one condition however it was listed."""

    drop: tuple[int, ...]
    class_index: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "drop", tuple(sorted(int(c) for c in self.drop)))

    @property
    def key(self) -> str:
        scope = "all" if self.class_index is None else f"class{self.class_index}"
        return f"{scope}:{','.join(map(str, self.drop))}"


#: largest number of activation values one stacked head call of `DropoutTask` takes (64 MiB)
STACKED_VALUES = 1 << 24


@dataclass(frozen=True)
class DropoutTask:
    """The head's logits under every condition; a row outside a condition's class is NaN.

    The conditions of one scope (all samples, or one class) share the scope's activations and
    run through the head stacked along the batch axis, as many at once as fit
    `STACKED_VALUES`: one head call instead of one per condition (the head works per sample,
    so the logits are those of separate calls)."""

    conditions: tuple[Condition, ...]
    predicted: np.ndarray
    n_classes: int
    description: str = "channel dropout"

    def __call__(self, model: WorkerModel, images: np.ndarray, rows: np.ndarray) -> Outputs:
        act = model.trunk(model.batch(images))
        predicted = self.predicted[rows]
        out: Outputs = {}
        for scope in dict.fromkeys(c.class_index for c in self.conditions):
            members = np.ones(len(rows), bool) if scope is None else predicted == scope
            mine = [c for c in self.conditions if c.class_index == scope]
            for condition in mine:
                out[condition.key] = np.full((len(rows), self.n_classes), np.nan, np.float32)
            if members.any():
                logits = self._scope_logits(model, act[torch.from_numpy(members)], mine)
                for condition, values in zip(mine, logits):
                    out[condition.key][members] = values
        return out

    @staticmethod
    def _scope_logits(
        model: WorkerModel, act: torch.Tensor, conditions: list[Condition]
    ) -> list[np.ndarray]:
        masks = torch.ones(len(conditions), act.shape[1], dtype=act.dtype, device=act.device)
        for j, condition in enumerate(conditions):
            masks[j, list(condition.drop)] = 0
        masks = masks.reshape(len(conditions), 1, act.shape[1], *([1] * (act.dim() - 2)))
        per_call = max(1, STACKED_VALUES // act.numel())
        logits = []
        for start in range(0, len(conditions), per_call):
            stacked = (act.unsqueeze(0) * masks[start : start + per_call]).flatten(0, 1)
            chunk = model.head(stacked).cpu().float().numpy()
            logits.extend(np.split(chunk, len(chunk) // len(act)))
        return logits


class DropoutLogits:
    """The logits of every dropout condition, per sample (see `dropout_pass`)."""

    def __init__(self, logits: Outputs, predicted: np.ndarray):
        self._logits, self._predicted = logits, predicted

    def of(self, class_index: int | None) -> Callable[[Sequence[int]], torch.Tensor]:
        """`drop -> logits` of the samples of `class_index` (all samples: None), in sample
        order, with channels `drop` zeroed; the function a dropout check measures with."""
        rows = (
            np.arange(len(self._predicted))
            if class_index is None
            else np.flatnonzero(self._predicted == class_index)
        )

        def logits_of(drop: Sequence[int]) -> torch.Tensor:
            key = Condition(tuple(drop), class_index).key
            return torch.from_numpy(self._logits[key][rows])

        return logits_of


def dropout_pass(
    executor: Executor,
    model: WorkerModel,
    images: ImageSource,
    conditions: Sequence[Condition],
    predicted: np.ndarray,
    n_classes: int,
    batch_size: int,
) -> DropoutLogits:
    """Every dropout condition in one pass: the trunk once per batch, the head per condition."""
    unique = tuple({c.key: c for c in conditions}.values())
    task = DropoutTask(unique, np.asarray(predicted, dtype=np.int64), n_classes)
    return DropoutLogits(executor.run(task, model, images, batch_size), predicted)


@dataclass(frozen=True)
class OcclusionTask:
    """The share of margin lost and the flip, per sample and grid cell, when the cell is
    occluded (against the unmodified logits `base_logits[row]`)."""

    probe: PatchOcclusion
    base_logits: np.ndarray
    description: str = "patch occlusion scan"

    def __call__(self, model: WorkerModel, images: np.ndarray, rows: np.ndarray) -> Outputs:
        batch = model.batch(images)
        base = torch.from_numpy(self.base_logits[rows])
        lost, flipped = [], []
        for cell in self.probe.cells():
            logits = model.head(model.trunk(cell(batch))).cpu()
            lost.append(margin_lost(logits, base))
            flipped.append((logits.argmax(dim=1) != base.argmax(dim=1)).numpy())
        return {"margin_lost": np.stack(lost, axis=1), "flipped": np.stack(flipped, axis=1)}


def head_logits(
    head: fx.GraphModule, activations: torch.Tensor, drop: Sequence[int], batch_size: int
) -> torch.Tensor:
    """Logits of the head on cached activations with channels `drop` zeroed."""
    mask = torch.ones(activations.shape[1], dtype=activations.dtype)
    mask[list(drop)] = 0
    shape = (1, -1) + (1,) * (activations.dim() - 2)
    mask = mask.reshape(shape)
    with torch.no_grad():
        return torch.cat(
            [head(chunk.float() * mask) for chunk in activations.split(batch_size)]
        )


def cached_logits(head: fx.GraphModule, activations: torch.Tensor, batch_size: int) -> LogitsOf:
    """`drop -> head logits` on activations held in memory."""
    return lambda drop: head_logits(head, activations, drop, batch_size)
