"""The first stage of an audit: resolve the model and the samples, and prepare what every pass
runs on (the model's graph split at the audited layer, the worker's model, the executor)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError

from auditor.audit.preflight import check_inputs
from auditor.audit.worker import WorkerModel
from auditor.config import AuditConfig
from auditor.config.analysis import Preprocess
from auditor.data.samples import SampleSet, load_samples, normalize
from auditor.errors import ConfigError
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
    graph, or (trusted) eager module exported on two of the samples; it returns the scores of
    `model.outputs` (`auditor.model.outputs`). `config.preprocess.channels`, when not set, is
    set to the channels the graph declares (`model_channels`)."""
    outputs = config.model.outputs
    if loaded.program is not None:
        graph = ModelGraph.from_program(loaded.program, outputs)
    elif loaded.graph is not None:
        graph = ModelGraph(loaded.graph, outputs)
    else:
        example = normalize(torch.from_numpy(samples.images[:2]), config.preprocess)
        graph = ModelGraph.from_module(loaded.module, example, outputs)
    config.preprocess = model_channels(config.preprocess, graph.input_shape)
    return graph


def model_channels(preprocess: Preprocess, input_shape: tuple[int | None, ...] | None) -> Preprocess:
    """`preprocess` with `channels` set to the model's declared input channels (1 or 3) where
    the config leaves it unset; `ConfigError` where mean / std do not fit them."""
    declared = input_shape[0] if input_shape else None
    if preprocess.channels is not None or declared not in (1, 3):
        return preprocess
    try:
        return Preprocess.model_validate({**preprocess.model_dump(), "channels": declared})
    except ValidationError as err:
        raise ConfigError(
            f"the model takes {declared}-channel images: {err.errors()[0]['msg']}",
            "give preprocess.mean and preprocess.std one value each",
        ) from err


def resolve_inputs(
    config: AuditConfig, resources: ExitStack, timer: StageTimer, scratch_dir: Path | None = None
) -> AuditInputs:
    """Load the model and the samples (their scratch folder in `scratch_dir`, default
    `executor.scratch_dir`), split the model's graph at the audited layer, check the
    inputs against it before any pass (`auditor.audit.preflight`), and start the executor; the
    samples and the executor are closed with `resources`."""
    with timer.stage("load_model"):
        loaded = load_model(
            config.model.uri,
            tracking_uri=config.tracking_uri,
            trusted=config.model.trusted,
            input_size=config.preprocess.size,
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
