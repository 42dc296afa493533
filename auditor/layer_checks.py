"""Checks that run on the audit's relevance pass at the audited layer: each probe with its
neutral twin, the activation shift of a channel set under a probe, and the per-class analysis
(seed 000 ranks the channels of the counterfeit class).

The trunk's cost is paid once by the relevance pass; these stages reuse its cached
activations and logits, and run the trunk again only on probed images.
"""

from __future__ import annotations

import torch

from auditor.checks.dropout import dropout_validation, random_channel_sets, rank_channels
from auditor.checks.metrics import condition_metrics
from auditor.checks.probes import Probe, change_norms, neutral_perturbation, relative_drop
from auditor.config import AuditConfig
from auditor.graph import SplitModel
from auditor.passes import LayerPass, RelevancePass, layer_pass
from auditor.results import (
    ChannelTable,
    ClassAnalysis,
    OcclusionMap,
    ProbeResult,
    ProbeShift,
)
from auditor.samples import SampleSet


def run_probe(
    probe: Probe,
    scan: OcclusionMap | None,
    split: SplitModel,
    samples: SampleSet,
    base: RelevancePass,
    channels: ChannelTable,
    random_sets: list[list[int]],
    config: AuditConfig,
) -> tuple[ProbeResult, LayerPass]:
    """One probe and its neutral twin, through the trunk once each; also returns the probed
    pass for the per-class activation statistics. The probe runs once per image: the probed
    pass records each image's change norm, which sizes its neutral twin."""
    name = probe.label
    sizes = torch.empty(len(samples.images))

    def probed(batch: torch.Tensor, start: int) -> torch.Tensor:
        rng = torch.Generator().manual_seed(config.seed * 1_000_003 + 500_009 + start)
        out = probe(batch, rng)
        sizes[start : start + len(batch)] = change_norms(batch, out)
        return out

    def neutral(batch: torch.Tensor, start: int) -> torch.Tensor:
        size = sizes[start : start + len(batch)]
        return neutral_perturbation(batch, size, seed=config.seed * 1_000_003 + start)

    run = {"preprocess": config.preprocess, "batch_size": config.batch_size}
    probed_pass = layer_pass(split, samples.images, probed, **run, description=f"probe {name}")
    neutral_pass = layer_pass(split, samples.images, neutral, **run, description=f"neutral twin of {name}")
    norm = float(sizes.mean())
    shift = probe_shift(name, base, probed_pass, None, channels.top_k, random_sets)
    result = ProbeResult(
        name=name,
        probed=condition_metrics(probed_pass.logits, base.logits, samples.labels, samples.groups),
        neutral=condition_metrics(neutral_pass.logits, base.logits, samples.labels, samples.groups),
        perturbation_norm=norm,
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


def analyse_class(
    class_index: int,
    split: SplitModel,
    samples: SampleSet,
    base: RelevancePass,
    probed: dict[str, LayerPass],
    k: int,
    config: AuditConfig,
) -> ClassAnalysis:
    """Rank, validate and probe the channels of the samples predicted as `class_index`."""
    index = (base.logits.argmax(dim=1) == class_index).nonzero().squeeze(1)
    relevance = base.channel_relevance[index].mean(dim=0).numpy().astype(float)
    top, bottom = rank_channels(relevance, k)
    random_sets = random_channel_sets(
        len(relevance), k, exclude=top, repeats=config.dropout.random_repeats,
        seed=config.seed + 7919 * (class_index + 1),
    )
    names = samples.class_names
    return ClassAnalysis(
        class_index=class_index,
        class_name=names[class_index] if names and class_index < len(names) else str(class_index),
        n_samples=len(index),
        relevance=[float(r) for r in relevance],
        top_k=top,
        bottom_k=bottom,
        dropout=dropout_validation(
            split.head, base.activations[index], samples.labels[index.numpy()],
            top_k=top, bottom_k=bottom, random_sets=random_sets, batch_size=config.batch_size,
            seed=config.seed + 7919 * (class_index + 1),
            n_boot=config.dropout.bootstrap_replicates, confidence=config.dropout.confidence,
        ),
        probe_shifts=[
            probe_shift(name, base, p, index, top, random_sets) for name, p in probed.items()
        ],
    )
