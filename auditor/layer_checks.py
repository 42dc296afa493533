"""Checks that run on the audit's relevance pass at the audited layer: each probe with its
neutral twin, the activation shift of a channel set under a probe, the per-class analysis
(seed 000 ranks the channels of the counterfeit class), and dropout statistics.

The trunk's cost is paid once by the relevance pass; these stages reuse its cached
activations and logits, and run the trunk again only on probed images.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from auditor.checks.dose_response import drop_margins
from auditor.checks.dropout import dropout_validation, random_channel_sets, rank_channels
from auditor.checks.metrics import condition_metrics
from auditor.checks.probes import Probe, neutral_perturbation, relative_drop
from auditor.checks.statistics import dropout_evidence
from auditor.config import AuditConfig
from auditor.graph import SplitModel
from auditor.passes import LayerPass, RelevancePass, layer_pass
from auditor.results import (
    ChannelTable,
    ClassAnalysis,
    DropoutTable,
    OcclusionMap,
    ProbeResult,
    ProbeShift,
)
from auditor.samples import SampleSet


def with_statistics(
    dropout: DropoutTable,
    head: torch.fx.GraphModule,
    activations: torch.Tensor,
    top: list[int],
    random_sets: list[list[int]],
    seed: int,
    config: AuditConfig,
) -> DropoutTable:
    """The dropout table with the bootstrap interval, p-value and effect size of its top-k."""
    margins = drop_margins(head, activations, [top, *random_sets], config.batch_size)
    statistics = dropout_evidence(
        margins[0], margins[1:], seed=seed,
        n_boot=config.dropout.bootstrap_replicates, confidence=config.dropout.confidence,
    )
    return replace(dropout, statistics=statistics)


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
    pass for the per-class activation statistics."""
    name = probe.label

    def rng(start: int) -> torch.Generator:
        return torch.Generator().manual_seed(config.seed * 1_000_003 + 500_009 + start)

    def probed(batch: torch.Tensor, start: int) -> torch.Tensor:
        return probe(batch, rng(start))

    def neutral(batch: torch.Tensor, start: int) -> torch.Tensor:
        return neutral_perturbation(
            batch, probe(batch, rng(start)), seed=config.seed * 1_000_003 + start
        )

    run = {"preprocess": config.preprocess, "batch_size": config.batch_size}
    probed_pass = layer_pass(split, samples.images, probed, **run, description=f"probe {name}")
    neutral_pass = layer_pass(split, samples.images, neutral, **run, description=f"neutral twin of {name}")
    images = torch.from_numpy(samples.images)
    norm = float((probe(images, rng(0)) - images).flatten(start_dim=1).norm(dim=1).mean())
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
        dropout=with_statistics(
            dropout_validation(
                split.head, base.activations[index], samples.labels[index.numpy()],
                top_k=top, bottom_k=bottom, random_sets=random_sets, batch_size=config.batch_size,
            ),
            split.head, base.activations[index], top, random_sets,
            seed=config.seed + 7919 * (class_index + 1), config=config,
        ),
        probe_shifts=[
            probe_shift(name, base, p, index, top, random_sets) for name, p in probed.items()
        ],
    )
