"""Checks that run on the audit's relevance pass at the audited layer: each probe with its
neutral twin, the activation shift of a channel set under a probe, and the per-class analysis
([Chandrasegaran2022] ranks the channels of the counterfeit class).

Each check's forward work is a streamed pass of the audit's executor (`auditor.audit.passes`); what
comes back is per-sample logits and channel means, which these functions reduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from auditor.audit.passes import (
    Condition,
    ForwardTask,
    LayerPass,
    NeutralTransform,
    OcclusionTask,
    ProbeTransform,
    RelevancePass,
    layer_pass,
)
from auditor.audit.worker import WorkerModel
from auditor.checks.dropout import (
    LogitsOf,
    dropout_conditions,
    dropout_validation,
    random_channel_sets,
    rank_channels,
)
from auditor.checks.metrics import condition_metrics
from auditor.checks.probes.base import Probe
from auditor.checks.probes.effect import relative_drop
from auditor.checks.probes.occlusion import PatchOcclusion, occlusion_summary
from auditor.config import AuditConfig
from auditor.data.samples import SampleSet
from auditor.execution import Executor
from auditor.results import (
    ChannelTable,
    ClassAnalysis,
    OcclusionMap,
    ProbeResult,
    ProbeShift,
)


def occlusion_scan(
    executor: Executor,
    model: WorkerModel,
    samples: SampleSet,
    base: LayerPass,
    probe: PatchOcclusion,
    config: AuditConfig,
) -> OcclusionMap:
    """The patch-occlusion map of `probe`'s grid over every sample, in one streamed pass."""
    task = OcclusionTask(probe, base.logits.numpy())
    out = executor.run(task, model, samples.images, config.pass_batch_size)
    return occlusion_summary(out["margin_lost"], out["flipped"], probe)


def run_probe(
    probe: Probe,
    scan: OcclusionMap | None,
    executor: Executor,
    model: WorkerModel,
    samples: SampleSet,
    base: RelevancePass,
    channels: ChannelTable,
    random_sets: list[list[int]],
    config: AuditConfig,
) -> tuple[ProbeResult, LayerPass]:
    """One probe and its neutral twin, a streamed pass each; also returns the probed pass for
    the per-class activation statistics. The probe runs once per image: the probed pass
    records each image's change norm, which sizes its neutral twin."""
    name = probe.label
    run = {"executor": executor, "model": model, "images": samples.images,
           "batch_size": config.pass_batch_size}
    probed_pass, extra = layer_pass(
        task=ForwardTask(f"probe {name}", ProbeTransform(probe, config.seed)), **run
    )
    sizes = extra["change_norm"]
    neutral_pass, _ = layer_pass(
        task=ForwardTask(f"neutral twin of {name}", NeutralTransform(sizes, config.seed)), **run
    )
    shift = probe_shift(name, base, probed_pass, None, channels.top_k, random_sets)
    result = ProbeResult(
        name=name,
        probed=condition_metrics(probed_pass.logits, base.logits, samples.labels, samples.groups),
        neutral=condition_metrics(neutral_pass.logits, base.logits, samples.labels, samples.groups),
        perturbation_norm=float(sizes.mean()),
        top_k_activation_drop=shift.top_k_activation_drop,
        random_k_activation_drops=shift.random_k_activation_drops,
        occlusion=scan,
    )
    return result, probed_pass


def probe_shift(
    name: str,
    base: LayerPass,
    probed: LayerPass,
    index: torch.Tensor | None,
    top_k: list[int],
    random_sets: list[list[int]],
) -> ProbeShift:
    """Relative activation drop of the top-k and of each random set, over samples `index`."""
    before, after = base.channel_means(index), probed.channel_means(index)
    return ProbeShift(
        probe=name,
        top_k_activation_drop=relative_drop(before, after, top_k),
        random_k_activation_drops=[relative_drop(before, after, s) for s in random_sets],
    )


@dataclass(frozen=True)
class ClassChannels:
    """The channels of one predicted class: its samples, mean relevance, ranking and random
    sets (what its dropout conditions are made of)."""

    class_index: int
    index: torch.Tensor
    relevance: np.ndarray
    top_k: list[int]
    bottom_k: list[int]
    random_sets: list[list[int]]
    seed: int

    @property
    def conditions(self) -> list[Condition]:
        return [
            Condition(tuple(drop), self.class_index)
            for drop in dropout_conditions(self.top_k, self.bottom_k, self.random_sets)
        ]


def class_channels(class_index: int, base: RelevancePass, k: int, config: AuditConfig) -> ClassChannels:
    """Rank the channels of the samples predicted as `class_index` by their mean relevance."""
    index = (base.logits.argmax(dim=1) == class_index).nonzero().squeeze(1)
    relevance = base.channel_relevance[index].mean(dim=0).numpy().astype(float)
    top, bottom = rank_channels(relevance, k)
    seed = config.seed + 7919 * (class_index + 1)
    random_sets = random_channel_sets(
        len(relevance), k, exclude=top, repeats=config.dropout.random_repeats, seed=seed
    )
    return ClassChannels(class_index, index, relevance, top, bottom, random_sets, seed)


def analyse_class(
    plan: ClassChannels,
    logits_of: LogitsOf,
    samples: SampleSet,
    base: RelevancePass,
    probed: dict[str, LayerPass],
    config: AuditConfig,
) -> ClassAnalysis:
    """Validate and probe the channels of one class (`logits_of`: its samples' dropout logits)."""
    names = samples.class_names
    c = plan.class_index
    return ClassAnalysis(
        class_index=c,
        class_name=names[c] if names and c < len(names) else str(c),
        n_samples=len(plan.index),
        relevance=[float(r) for r in plan.relevance],
        top_k=plan.top_k,
        bottom_k=plan.bottom_k,
        dropout=dropout_validation(
            logits_of, samples.labels[plan.index.numpy()],
            top_k=plan.top_k, bottom_k=plan.bottom_k, random_sets=plan.random_sets,
            seed=plan.seed,
            n_boot=config.dropout.bootstrap_replicates, confidence=config.dropout.confidence,
        ),
        probe_shifts=[
            probe_shift(name, base, p, plan.index, plan.top_k, plan.random_sets)
            for name, p in probed.items()
        ],
    )
