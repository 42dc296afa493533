"""One audit's results, stage by stage: resolve the model and samples, run the relevance pass,
rank the channels, validate them by dropout, probe, analyse each class, derive the findings,
then the stages that write files for the dashboard (subclasses, channel galleries). Each stage
is a named function (`auditor.audit.resolve`, `auditor.audit.stages`,
`auditor.audit.subclass_stage`, `auditor.audit.gallery_stage`) that runs its passes, then its
pure checks, then its writers. The store's life cycle around it is `auditor.audit.lifecycle`.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from auditor.artefacts.folder import writing_into
from auditor.audit.consolidation_stage import consolidation_stage
from auditor.audit.counterfactual_stage import counterfactual_stage
from auditor.audit.gallery_stage import channel_galleries, gallery_channel_sets
from auditor.audit.resolve import AuditInputs, StageTimer, resolve_inputs
from auditor.audit.stages import (
    PassRunner,
    channel_plan,
    class_stage,
    dropout_stage,
    finding_stage,
    probe_stage,
    relevance_stage,
)
from auditor.audit.subclass_stage import layer_embeddings, subclass_stage
from auditor.config import AuditConfig
from auditor.results import AuditResult


@dataclass(frozen=True)
class AuditRun:
    """An audit's results and the per-sample channel relevance (N x C) they were averaged from,
    which the drift statistics bootstrap over."""

    result: AuditResult
    channel_relevance: torch.Tensor


def audit(config: AuditConfig) -> AuditResult:
    """Compute one audit's results (no store involved)."""
    return run_checks(config).result


def run_checks(
    config: AuditConfig, artifact_dir: Path | None = None, *, scratch_dir: Path | None = None
) -> AuditRun:
    """Every stage of one audit up to its findings (no store involved). The stages that write
    files for the dashboard (embedding index and maps, channel galleries) run only when given
    the audit's `artifact_dir`. Samples are streamed from disk and every heavy pass runs on the
    configured executor (`executor.kind`). The samples' scratch folder goes into `scratch_dir`
    (default: `executor.scratch_dir`)."""
    torch.manual_seed(config.seed)
    timer = StageTimer()
    with ExitStack() as resources:
        inputs = resolve_inputs(config, resources, timer, scratch_dir)
        return _checks(inputs, config, artifact_dir, timer)


def _checks(
    inputs: AuditInputs, config: AuditConfig, artifact_dir: Path | None, timer: StageTimer
) -> AuditRun:
    samples, model = inputs.samples, inputs.model
    runner = PassRunner(inputs.executor, model, samples.images, config.pass_batch_size, config.seed)
    with timer.stage("relevance_pass"):
        base = relevance_stage(runner, samples, config)
    plan = channel_plan(base, model.split.layer, config)
    with timer.stage("dropout"):
        dropout = dropout_stage(runner, samples, base, plan, config)
    with timer.stage("probes"):
        probes = probe_stage(runner, samples, base, plan, config.probes)
    with timer.stage("classes"):
        classes = class_stage(samples, base, plan, dropout, probes, config)
    findings = finding_stage(plan, dropout, probes, classes, config, samples.class_names)
    with timer.stage("counterfactual"):
        findings = counterfactual_stage(
            runner, base, {run.result.name: run.probe for run in probes}, findings,
            samples.ids, config.counterfactual,
        )  # fmt: skip
    subclasses = gallery = None
    if artifact_dir is not None and config.subclasses.enabled:
        with timer.stage("subclasses"), writing_into(artifact_dir):
            embeddings = layer_embeddings(runner, inputs.graph, base, config.subclasses.embedding_layer)
            subclasses = subclass_stage(samples, base, config, artifact_dir, embeddings=embeddings)
        findings += subclasses.findings
    with timer.stage("consolidation"):
        findings = consolidation_stage(
            runner, base, probes, findings, config.thresholds.probe_excess_flip,
            config.consolidation,
        )  # fmt: skip
    if artifact_dir is not None and config.gallery.enabled:
        with timer.stage("gallery"), writing_into(artifact_dir):
            gallery = channel_galleries(
                model.split, samples, base,
                gallery_channel_sets(plan.channels, classes, findings, config.gallery.channels),
                config, artifact_dir, model.head_lrp.rules,
            )
    result = AuditResult(
        model=replace(inputs.loaded.ref, scores=inputs.graph.scores),
        n_samples=len(samples.labels),
        n_labelled=samples.n_labelled,
        sample_sets={name: samples.set_names.count(name) for name in dict.fromkeys(samples.set_names)},
        channels=plan.channels,
        dropout=dropout.table,
        probes=[run.result for run in probes],
        findings=findings,
        timings=dict(timer),
        classes=classes,
        dose_response=dropout.dose_response,
        subclasses=subclasses,
        gallery=gallery,
    )
    return AuditRun(result=result, channel_relevance=base.channel_relevance)
