"""The first stage of an audit: resolve the model and the samples, and prepare what every pass
runs on (the model's graph split at the audited layer, the worker's model, the executor)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from auditor.audit.preflight import check_inputs
from auditor.audit.worker import WorkerModel
from auditor.config import AuditConfig
from auditor.data.samples import SampleSet, load_samples, normalize
from auditor.execution import Executor, make_executor
from auditor.model.graph import ModelGraph
from auditor.tracking.resolve import LoadedModel, load_model


class StageTimer(dict):
    """Wall-clock seconds per stage, in stage order."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self[name] = round(time.perf_counter() - start, 4)


@dataclass(frozen=True)
class AuditInputs:
    """What every stage of an audit works on: the model, its graph and the worker's view of it,
    the samples (read lazily) and the executor of the passes."""

    loaded: LoadedModel
    graph: ModelGraph
    model: WorkerModel
    samples: SampleSet
    executor: Executor


def build_graph(loaded: LoadedModel, samples: SampleSet, config: AuditConfig) -> ModelGraph:
    """The model as one aten graph, whatever its artefact: torch.export program, imported ONNX
    graph, or (trusted) eager module exported on two of the samples."""
    if loaded.program is not None:
        return ModelGraph.from_program(loaded.program)
    if loaded.graph is not None:
        return ModelGraph(loaded.graph)
    example = normalize(torch.from_numpy(samples.images[:2]), config.preprocess)
    return ModelGraph.from_module(loaded.module, example)


def resolve_inputs(
    config: AuditConfig, resources: ExitStack, timer: StageTimer, scratch_dir: Path | None = None
) -> AuditInputs:
    """Load the model and the samples (their scratch folder in `scratch_dir`, default
    `executor.scratch_dir`), split the model's graph at the audited layer, check the
    inputs against it before any pass (`auditor.audit.preflight`), and start the executor; the
    samples and the executor are closed with `resources`."""
    with timer.stage("load_model"):
        loaded = load_model(
            config.model.uri, tracking_uri=config.tracking_uri, trusted=config.model.trusted
        )
    with timer.stage("load_samples"):
        samples = resources.enter_context(
            load_samples(
                config.samples,
                tracking_uri=config.tracking_uri,
                preprocess=config.preprocess,
                scratch_dir=scratch_dir or config.executor.scratch_dir,
            )
        )
    with timer.stage("prepare_graph"):
        graph = build_graph(loaded, samples, config)
        split = graph.split(config.model.layer or graph.default_layer())
        model = WorkerModel(
            split, config.preprocess, config.relevance.composite, config.relevance.epsilon
        )
    with timer.stage("preflight"):
        check_inputs(graph, split, samples, config)
    with timer.stage("start_executor"):
        executor = resources.enter_context(make_executor(config.executor))
    return AuditInputs(loaded, graph, model, samples, executor)
