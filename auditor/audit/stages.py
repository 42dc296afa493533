"""The stages of an audit at the audited layer, each a named function: the relevance pass, the
channel ranking, the dropout validation, the probes with their controls, the per-class
analysis and the findings. Each stage runs its streamed passes (`auditor.audit.passes`) first
and then the pure checks of `auditor.checks` on what came back; none reads the config further
than the parameters it maps onto the checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from auditor.audit.passes import (
    Condition,
    ControlTransform,
    DropoutLogits,
    ForwardTask,
    LayerPass,
    OcclusionTask,
    ProbeTransform,
    RelevancePass,
    dropout_pass,
    layer_pass,
    relevance_pass,
)
from auditor.audit.preflight import top_k_size
from auditor.audit.worker import WorkerModel
from auditor.checks.dose_response import DoseSets, dose_ks, dose_response, dose_sets
from auditor.checks.dropout import (
    dropout_conditions,
    dropout_validation,
    random_channel_sets,
    rank_channels,
)
from auditor.checks.findings import FindingThresholds, derive_findings, family_size
from auditor.checks.probes.base import Probe, build_probe
from auditor.checks.probes.effect import probe_result, probe_shift
from auditor.checks.probes.neutral import donor_rows
from auditor.checks.probes.occlusion import PatchOcclusion, occlusion_summary
from auditor.checks.statistics import null_draws_for
from auditor.config import AuditConfig, Thresholds
from auditor.config.analysis import ProbeSettings
from auditor.data.images import ImageSource
from auditor.data.samples import SampleSet
from auditor.execution import Executor
from auditor.results import (
    ChannelTable,
    ClassAnalysis,
    DoseResponse,
    DropoutTable,
    Finding,
    OcclusionMap,
    ProbeResult,
)


@dataclass(frozen=True)
class PassRunner:
    """What every streamed pass of an audit runs on: the executor, the worker's model, the
    samples' images, the pass batch size and the audit seed."""

    executor: Executor
    model: WorkerModel
    images: ImageSource
    batch_size: int
    seed: int


def relevance_stage(runner: PassRunner, samples: SampleSet, config: AuditConfig) -> RelevancePass:
    """The relevance pass at the audited layer, for the configured explained class."""
    targets = samples.labels if config.relevance.target == "label" else None
    return relevance_pass(
        runner.executor, runner.model, runner.images, targets, runner.batch_size,
        gallery_size=config.gallery.samples_per_channel,
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


def class_channels(
    class_index: int, base: RelevancePass, k: int, repeats: int, config: AuditConfig
) -> ClassChannels:
    """Rank the channels of the samples predicted as `class_index` by their mean relevance and
    draw its `repeats` random sets."""
    index = (base.logits.argmax(dim=1) == class_index).nonzero().squeeze(1)
    relevance = base.channel_relevance[index].mean(dim=0).numpy().astype(float)
    top, bottom = rank_channels(relevance, k)
    seed = config.seed + 7919 * (class_index + 1)
    random_sets = random_channel_sets(len(relevance), k, exclude=top, repeats=repeats, seed=seed)
    return ClassChannels(class_index, index, relevance, top, bottom, random_sets, seed)


def random_repeats(n_classes: int, config: AuditConfig) -> int:
    """`dropout.random_repeats`, or by default the random sets whose smallest p-value is half
    of Holm's smallest level over the audit's family of tests (`null_draws_for`)."""
    if config.dropout.random_repeats is not None:
        return config.dropout.random_repeats
    labels = [build_probe(entry) for entry in config.probes.names]
    non_semantic = sum(p.name in config.probes.non_semantic for p in labels)
    size = family_size(n_classes, len(labels), non_semantic)
    return null_draws_for(size, config.thresholds.false_alarm_rate)


@dataclass(frozen=True)
class ChannelPlan:
    """The ranked channels of the layer and every channel set the audit measures: random sets
    beside the top-k, the per-class rankings, and the dose-response sets."""

    channels: ChannelTable
    random_sets: list[list[int]]
    classes: list[ClassChannels]
    doses: list[DoseSets]

    @property
    def conditions(self) -> list[Condition]:
        """Every dropout condition of the plan (one pass runs them all)."""
        channels = self.channels
        return [
            *(Condition(tuple(d)) for d in dropout_conditions(channels.top_k, channels.bottom_k, self.random_sets)),
            *(Condition(tuple(d)) for point in self.doses for d in point.drops),
            *(c for plan in self.classes for c in plan.conditions),
        ]


def channel_plan(base: RelevancePass, layer: str, config: AuditConfig) -> ChannelPlan:
    """Rank the channels by mean relevance, draw the random sets, and plan the classes
    predicted at least `channels.min_class_samples` times and the dose-response points."""
    relevance = base.channel_relevance.mean(dim=0).numpy().astype(float)
    k = top_k_size(len(relevance), config)
    top, bottom = rank_channels(relevance, k)
    channels = ChannelTable(
        layer=layer,
        method=f"lrp:{config.relevance.composite}",
        relevance=[float(r) for r in relevance],
        top_k=top,
        bottom_k=bottom,
    )
    counts = torch.bincount(base.logits.argmax(dim=1), minlength=base.logits.shape[1])
    planned = [c for c in range(len(counts)) if counts[c] >= config.channels.min_class_samples]
    repeats = random_repeats(len(planned), config)
    random_sets = random_channel_sets(
        len(relevance), k, exclude=top, repeats=repeats, seed=config.seed
    )
    classes = [class_channels(c, base, k, repeats, config) for c in planned]
    doses = dose_sets(
        relevance, dose_ks(len(relevance), config.dropout.dose_response_fractions),
        random_repeats=config.dropout.dose_response_random_repeats, seed=config.seed,
    ) if config.dropout.dose_response_fractions else []
    return ChannelPlan(channels, random_sets, classes, doses)


@dataclass(frozen=True)
class DropoutOutcome:
    """The dropout validation of the global top-k, the dose response, and the logits of every
    condition (the per-class analysis reads its own)."""

    table: DropoutTable
    dose_response: DoseResponse | None
    logits: DropoutLogits


def dropout_stage(
    runner: PassRunner, samples: SampleSet, base: RelevancePass, plan: ChannelPlan, config: AuditConfig
) -> DropoutOutcome:
    """Every dropout condition of the plan in one pass, then the global validation and the
    dose response."""
    predicted = base.logits.argmax(dim=1)
    dropped = dropout_pass(
        runner.executor, runner.model, runner.images, plan.conditions, predicted.numpy(),
        base.logits.shape[1], runner.batch_size,
    )
    statistics = {
        "seed": config.seed, "n_boot": config.dropout.bootstrap_replicates,
        "confidence": config.dropout.confidence,
    }
    channels = plan.channels
    table = dropout_validation(
        dropped.of(None), samples.labels,
        top_k=channels.top_k, bottom_k=channels.bottom_k, random_sets=plan.random_sets, **statistics,
    )
    dose = (
        dose_response(dropped.of(None), samples.labels, plan.doses, len(channels.relevance), **statistics)
        if plan.doses else None
    )
    return DropoutOutcome(table, dose, dropped)


@dataclass(frozen=True)
class PlacedProbe:
    """A probe to run as one transform, with the occlusion map that placed it (a scanning
    `patch_occlusion` runs at its worst cell)."""

    probe: Probe
    occlusion: OcclusionMap | None = None


def occlusion_scan(runner: PassRunner, base: LayerPass, probe: PatchOcclusion) -> OcclusionMap:
    """The patch-occlusion map of `probe`'s grid over every sample, in one streamed pass."""
    task = OcclusionTask(probe, base.logits.numpy())
    out = runner.executor.run(task, runner.model, runner.images, runner.batch_size)
    return occlusion_summary(out["margin_lost"], out["flipped"], probe)


def place_probe(probe: Probe, runner: PassRunner, base: LayerPass) -> PlacedProbe:
    """A scanning `patch_occlusion` (no cell) scanned and placed at its worst cell; any other
    probe as it is."""
    if isinstance(probe, PatchOcclusion) and probe.scans:
        occlusion = occlusion_scan(runner, base, probe)
        return PlacedProbe(probe.at(occlusion.worst_cell), occlusion)
    return PlacedProbe(probe)


@dataclass(frozen=True)
class ProbeJob:
    """One placed probe and what its passes run on and its effect is measured against: the
    relevance pass, the samples' labels and groups, the top-k and the random channel sets."""

    placed: PlacedProbe
    runner: PassRunner
    base: RelevancePass
    samples: SampleSet
    top_k: list[int]
    random_sets: list[list[int]]
    null_sets: int = ProbeSettings.model_fields["null_channel_sets"].default


@dataclass(frozen=True)
class ProbeRun:
    """A probe's result and its probed pass (the per-class activation statistics read it)."""

    probe: Probe
    result: ProbeResult
    probed: LayerPass


#: donors per predicted class of a probe's control (`auditor.checks.probes.neutral`)
CONTROL_DONORS_PER_CLASS = 16


def donor_changes(job: ProbeJob, donors: np.ndarray) -> np.ndarray:
    """The probe's change `probe(x_d) - x_d` of each donor image (float32, donors x 3 x H x W)."""
    model = job.runner.model
    images = model.batch(job.runner.images.read(donors))
    probed, _ = ProbeTransform(job.placed.probe, job.runner.seed)(images, donors)
    return (probed - images).cpu().numpy().astype(np.float32)


def run_probe(job: ProbeJob) -> ProbeRun:
    """One probe and its control, a streamed pass each, then their effect. The probe runs
    once per image: the probed pass records each image's change norm, which sizes its
    control (the change of a donor predicted as another class, `ControlTransform`)."""
    probe, runner = job.placed.probe, job.runner
    name = probe.label
    run = {"executor": runner.executor, "model": runner.model, "images": runner.images,
           "batch_size": runner.batch_size}
    probed_pass, extra = layer_pass(
        task=ForwardTask(f"probe {name}", ProbeTransform(probe, runner.seed)), **run
    )
    predicted = job.base.logits.argmax(dim=1).numpy()
    donors = donor_rows(predicted, CONTROL_DONORS_PER_CLASS, runner.seed)
    control = ControlTransform(
        extra["change_norm"], donor_changes(job, donors), donors, predicted, runner.seed
    )
    control_pass, _ = layer_pass(task=ForwardTask(f"control of {name}", control), **run)
    shift = probe_shift(
        name, job.base.channel_activation, probed_pass.channel_activation, job.top_k,
        job.random_sets, n_null=job.null_sets, seed=runner.seed,
    )
    result = probe_result(
        name, job.base.logits, probed_pass.logits, control_pass.logits,
        job.samples.labels, job.samples.groups, extra["change_norm"], shift, job.placed.occlusion,
    )
    return ProbeRun(probe, result, probed_pass)


def probe_stage(
    runner: PassRunner,
    samples: SampleSet,
    base: RelevancePass,
    plan: ChannelPlan,
    settings: ProbeSettings,
) -> list[ProbeRun]:
    """Each configured probe entry built, placed and run with its control."""
    placed = [place_probe(build_probe(entry), runner, base) for entry in settings.names]
    return [
        run_probe(
            ProbeJob(
                p, runner, base, samples, plan.channels.top_k, plan.random_sets,
                settings.null_channel_sets,
            )
        )
        for p in placed
    ]


def analyse_class(
    plan: ClassChannels,
    dropped: DropoutLogits,
    samples: SampleSet,
    base: RelevancePass,
    probes: list[ProbeRun],
    config: AuditConfig,
) -> ClassAnalysis:
    """Validate and probe the channels of one class (its samples' dropout logits from
    `dropped`, its activation shifts from each probe's probed pass)."""
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
            dropped.of(c), samples.labels[plan.index.numpy()],
            top_k=plan.top_k, bottom_k=plan.bottom_k, random_sets=plan.random_sets,
            seed=plan.seed,
            n_boot=config.dropout.bootstrap_replicates, confidence=config.dropout.confidence,
        ),
        probe_shifts=[
            probe_shift(
                run.result.name, base.channel_activation[plan.index],
                run.probed.channel_activation[plan.index], plan.top_k, plan.random_sets,
                n_null=config.probes.null_channel_sets, seed=plan.seed,
            )
            for run in probes
        ],
    )


def class_stage(
    samples: SampleSet,
    base: RelevancePass,
    plan: ChannelPlan,
    dropout: DropoutOutcome,
    probes: list[ProbeRun],
    config: AuditConfig,
) -> list[ClassAnalysis]:
    """The per-class analysis of every planned class."""
    return [analyse_class(c, dropout.logits, samples, base, probes, config) for c in plan.classes]


def finding_thresholds(thresholds: Thresholds) -> FindingThresholds:
    """The config's `thresholds` as the findings' parameters."""
    return FindingThresholds(
        dropout_effect=thresholds.dropout_effect,
        probe_excess_flip=thresholds.probe_excess_flip,
        activation_collapse=thresholds.activation_collapse,
        false_alarm_rate=thresholds.false_alarm_rate,
    )


def finding_stage(
    plan: ChannelPlan,
    dropout: DropoutOutcome,
    probes: list[ProbeRun],
    classes: list[ClassAnalysis],
    config: AuditConfig,
    class_names: list[str] | None = None,
) -> list[Finding]:
    """The findings the layer's evidence supports; `spurious_channels` only under the probes
    the config declares non-semantic."""
    non_semantic = [run.probe.label for run in probes if run.probe.name in config.probes.non_semantic]
    return derive_findings(
        plan.channels, dropout.table, [run.result for run in probes], classes,
        finding_thresholds(config.thresholds), non_semantic, class_names,
    )
