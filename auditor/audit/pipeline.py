"""One audit, top to bottom: resolve -> one batched relevance pass -> checks -> findings -> store.

`audit(config)` computes an `AuditResult` without touching the store; `run_audit(config)`
wraps it in the store's life cycle: the audit row is created as running, its results land in
one transaction, and any failure (bad input, a bug) marks it failed with its error; Ctrl-C or
SIGTERM marks it cancelled (`auditor.audit.cancellation`).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from auditor import __version__
from auditor.artefacts.embeddings import layer_embeddings
from auditor.artefacts.gallery import channel_galleries, gallery_channel_sets
from auditor.audit.cancellation import cancellation, sigterm_cancels
from auditor.audit.drift import explanation_drift
from auditor.audit.passes import Condition, dropout_pass, relevance_pass
from auditor.audit.post_audit import after_audit, on_audit_failed
from auditor.audit.report import staged_report
from auditor.audit.stages import analyse_class, class_channels, occlusion_scan, run_probe
from auditor.audit.worker import WorkerModel
from auditor.checks.dose_response import dose_ks, dose_response, dose_sets
from auditor.checks.dropout import (
    dropout_conditions,
    dropout_validation,
    random_channel_sets,
    rank_channels,
)
from auditor.checks.findings import derive_findings
from auditor.checks.probes.base import build_probe
from auditor.checks.probes.occlusion import place_probe
from auditor.checks.subclasses import subclass_check
from auditor.config import AuditConfig
from auditor.data.samples import SampleSet, load_samples, normalize
from auditor.errors import AuditorError, ConfigError, SampleError
from auditor.execution import Executor, make_executor
from auditor.model.graph import ModelGraph, SplitModel
from auditor.results import AuditResult, ChannelTable, DriftReport
from auditor.store import AuditStore
from auditor.tracking.resolve import LoadedModel, load_model
from auditor.tracking.run_log import log_audit


@dataclass(frozen=True)
class AuditOutcome:
    audit_id: int
    result: AuditResult
    report_path: Path | None
    drift: DriftReport | None = None


@dataclass(frozen=True)
class AuditRun:
    """An audit's results and the per-sample channel relevance (N x C) they were averaged from,
    which the drift statistics bootstrap over."""

    result: AuditResult
    channel_relevance: torch.Tensor


class _Timer(dict):
    """Wall-clock seconds per stage, in stage order."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self[name] = round(time.perf_counter() - start, 4)


def build_graph(loaded: LoadedModel, samples: SampleSet, config: AuditConfig) -> ModelGraph:
    """The model as one aten graph, whatever its artefact: torch.export program, imported ONNX
    graph, or (trusted) eager module exported on two of the samples."""
    if loaded.program is not None:
        return ModelGraph.from_program(loaded.program)
    if loaded.graph is not None:
        return ModelGraph(loaded.graph)
    example = normalize(torch.from_numpy(samples.images[:2]), config.preprocess)
    return ModelGraph.from_module(loaded.module, example)


def check_fit(graph: ModelGraph, split: SplitModel, samples: SampleSet, config: AuditConfig) -> None:
    """Fail early, with the sample size in the message, when the samples do not fit the model:
    another size than the one the graph was exported for, or a forward pass that fails."""
    shape = tuple(samples.images.shape[1:])
    size = "x".join(str(s) for s in shape)
    expected = graph.input_shape
    fix = "set preprocess.size to the model's input size"
    if expected is not None and any(e is not None and e != s for e, s in zip(expected, shape)):
        wanted = "x".join("?" if e is None else str(e) for e in expected)
        raise SampleError(
            f"samples of size {size} do not fit model {config.model.uri}, which takes {wanted}", fix
        )
    batch = normalize(torch.from_numpy(samples.images[:2]), config.preprocess)
    try:
        with torch.no_grad():
            split.head(split.trunk(batch))
    except Exception as err:  # shape errors surface as several exception types
        raise SampleError(
            f"samples of size {size} do not fit model {config.model.uri}: "
            f"{str(err).splitlines()[0]}",
            fix,
        ) from err


def top_k_size(n_channels: int, config: AuditConfig) -> int:
    k = config.channels.top_k or max(1, round(config.channels.top_k_fraction * n_channels))
    if 2 * k > n_channels:
        raise ConfigError(
            f"channels.top_k = {k} leaves fewer than k of the {n_channels} channels for random-k",
            f"use top_k <= {n_channels // 2}",
        )
    return k


def audit(config: AuditConfig) -> AuditResult:
    """Compute one audit's results (no store involved)."""
    return run_checks(config).result


@dataclass
class _Prepared:
    """What every stage of an audit works on: the model, its graph and the worker's view of it,
    the samples (read lazily) and the executor of the passes."""

    loaded: LoadedModel
    graph: ModelGraph
    model: WorkerModel
    samples: SampleSet
    executor: Executor


def run_checks(config: AuditConfig, artifact_dir: Path | None = None) -> AuditRun:
    """Every stage of one audit up to its findings (no store involved). The stages that write
    files for the dashboard (embedding index and maps, channel galleries) run only when given
    the audit's `artifact_dir`. Samples are streamed from disk and every heavy pass runs on the
    configured executor (`executor.kind`)."""
    torch.manual_seed(config.seed)
    timer = _Timer()
    with ExitStack() as resources:
        with timer.stage("load_model"):
            loaded = load_model(
                config.model.uri, tracking_uri=config.tracking_uri, trusted=config.model.trusted
            )
        with timer.stage("load_samples"):
            samples = resources.enter_context(
                load_samples(
                    config.samples, tracking_uri=config.tracking_uri,
                    preprocess=config.preprocess, scratch_dir=config.executor.scratch_dir,
                )
            )
        with timer.stage("prepare_graph"):
            graph = build_graph(loaded, samples, config)
            split = graph.split(config.model.layer or graph.default_layer())
            check_fit(graph, split, samples, config)
            model = WorkerModel(
                split, config.preprocess, config.relevance.composite, config.relevance.epsilon
            )
        with timer.stage("start_executor"):
            executor = resources.enter_context(make_executor(config.executor))
        return _checks(_Prepared(loaded, graph, model, samples, executor), config, artifact_dir, timer)


def _checks(
    prepared: _Prepared, config: AuditConfig, artifact_dir: Path | None, timer: _Timer
) -> AuditRun:
    samples, executor, model = prepared.samples, prepared.executor, prepared.model
    batch_size = config.pass_batch_size
    with timer.stage("relevance_pass"):
        targets = samples.labels if config.relevance.target == "label" else None
        base = relevance_pass(
            executor, model, samples.images, targets, batch_size,
            gallery_size=config.gallery.samples_per_channel,
        )
    relevance = base.channel_relevance.mean(dim=0).numpy().astype(float)
    k = top_k_size(len(relevance), config)
    top, bottom = rank_channels(relevance, k)
    channels = ChannelTable(
        layer=model.split.layer,
        method=f"lrp:{config.relevance.composite}",
        relevance=[float(r) for r in relevance],
        top_k=top,
        bottom_k=bottom,
    )
    random_sets = random_channel_sets(
        len(relevance), k, exclude=top, repeats=config.dropout.random_repeats, seed=config.seed
    )
    predicted = base.logits.argmax(dim=1)
    counts = torch.bincount(predicted, minlength=base.logits.shape[1])
    plans = [
        class_channels(c, base, k, config)
        for c in range(len(counts))
        if counts[c] >= config.channels.min_class_samples
    ]
    doses = dose_sets(
        relevance, dose_ks(len(relevance), config.dropout.dose_response_fractions),
        random_repeats=config.dropout.dose_response_random_repeats, seed=config.seed,
    ) if config.dropout.dose_response_fractions else []
    with timer.stage("dropout"):
        conditions = [
            *(Condition(tuple(d)) for d in dropout_conditions(top, bottom, random_sets)),
            *(Condition(tuple(d)) for point in doses for d in point.drops),
            *(c for plan in plans for c in plan.conditions),
        ]
        dropped = dropout_pass(
            executor, model, samples.images, conditions, predicted.numpy(),
            base.logits.shape[1], batch_size,
        )
        statistics = {
            "seed": config.seed, "n_boot": config.dropout.bootstrap_replicates,
            "confidence": config.dropout.confidence,
        }
        dropout = dropout_validation(
            dropped.of(None), samples.labels,
            top_k=top, bottom_k=bottom, random_sets=random_sets, **statistics,
        )
        dose = (
            dose_response(dropped.of(None), samples.labels, doses, len(relevance), **statistics)
            if doses else None
        )
    with timer.stage("probes"):
        placed = [
            place_probe(
                build_probe(e),
                lambda probe: occlusion_scan(executor, model, samples, base, probe, config),
            )
            for e in config.probes.names
        ]
        runs = [
            run_probe(probe, scan, executor, model, samples, base, channels, random_sets, config)
            for probe, scan in placed
        ]
    probes = [result for result, _ in runs]
    non_semantic = [p.label for p, _ in placed if p.name in config.probes.non_semantic]
    with timer.stage("classes"):
        probed = {p.name: run for p, run in runs}
        classes = [
            analyse_class(plan, dropped.of(plan.class_index), samples, base, probed, config)
            for plan in plans
        ]
    findings = derive_findings(
        channels, dropout, probes, classes, config.thresholds, non_semantic
    )
    subclasses = gallery = None
    if artifact_dir is not None and config.subclasses.enabled:
        with timer.stage("subclasses"):
            embeddings = layer_embeddings(executor, model, prepared.graph, samples, base, config)
            subclasses = subclass_check(samples, base, config, artifact_dir, embeddings=embeddings)
        findings += subclasses.findings
    if artifact_dir is not None and config.gallery.enabled:
        with timer.stage("gallery"):
            gallery = channel_galleries(
                model.split, samples, base,
                gallery_channel_sets(channels, classes, findings, config.gallery.channels),
                config, artifact_dir, model.head_lrp.rules,
            )
    result = AuditResult(
        model=prepared.loaded.ref,
        n_samples=len(samples.labels),
        n_labelled=samples.n_labelled,
        sample_sets={name: samples.set_names.count(name) for name in dict.fromkeys(samples.set_names)},
        channels=channels,
        dropout=dropout,
        probes=probes,
        findings=findings,
        timings=dict(timer),
        classes=classes,
        dose_response=dose,
        subclasses=subclasses,
        gallery=gallery,
    )
    return AuditRun(result=result, channel_relevance=base.channel_relevance)


def config_hash(config: AuditConfig) -> str:
    return hashlib.sha256(config.to_yaml().encode()).hexdigest()


def run_audit(config: AuditConfig, *, report_path: Path | None = None) -> AuditOutcome:
    """Run and store one audit; on any failure the stored audit is marked failed (and the
    `audit_failed` alert rules run) and the error propagates (an `AuditorError` carries the
    one-line message for the user). Ctrl-C or SIGTERM (in the main thread) cancels it: it is
    marked cancelled, without an alert, and `AuditCancelled` is raised instead.

    While it runs, the audit's heartbeat is kept fresh, so that another auditor can tell a
    crashed audit from a running one. Drift against the baseline audit is computed before the
    one transaction that stores the audit, so its findings are part of it; alerts are sent
    after the commit, so no alert announces an audit that was rolled back.
    """
    store = AuditStore(config.store_url)
    try:
        store.mark_stale_running_as_failed(config.heartbeat.stale_after_s)
        audit_id = store.start_audit(
            model_uri=config.model.uri,
            config_yaml=config.to_yaml(),
            config_hash=config_hash(config),
            code_version=__version__,
        )
        artifact_dir = config.audit_artifact_dir(audit_id)
        try:
            with sigterm_cancels(), store.keep_alive(audit_id, config.heartbeat.interval_s):
                start = time.perf_counter()
                run = run_checks(config, artifact_dir)
                result = run.result
                clusters = result.subclasses.clusters if result.subclasses else []
                drift = explanation_drift(
                    store, result, run.channel_relevance.numpy(), config, clusters
                )
                if drift is not None:
                    result.findings.extend(drift.findings)
                result.timings["total"] = round(time.perf_counter() - start, 4)
                with staged_report(report_path, audit_id, result):
                    store.finish_audit(
                        audit_id,
                        result,
                        report_path=str(report_path) if report_path else None,
                        drift=drift,
                        clusters=clusters,
                        artefacts=[
                            *(result.subclasses.artefacts if result.subclasses else []),
                            *(result.gallery.artefacts if result.gallery else []),
                        ],
                    )
        except BaseException as err:
            shutil.rmtree(artifact_dir, ignore_errors=True)  # no files of a failed/cancelled audit
            if (cancelled := cancellation(err, audit_id)) is not None:  # Ctrl-C, SIGTERM
                store.cancel_audit(audit_id, cancelled.reason)  # deliberate: no audit_failed alert
                raise cancelled from err
            reason = str(err) if isinstance(err, AuditorError) else f"{type(err).__name__}: {err}"
            store.fail_audit(audit_id, reason or type(err).__name__)
            on_audit_failed(store, audit_id, reason, config)
            raise
        after_audit(store, audit_id, config)
        outcome = AuditOutcome(audit_id=audit_id, result=result, report_path=report_path, drift=drift)
        log_audit(outcome, config)  # no-op unless mlflow_logging.enabled; never raises
        return outcome
    finally:
        store.close()
