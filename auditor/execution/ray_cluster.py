"""The distributed executor: a pass's batches mapped over a pool of Ray actors that hold the
model (Ray Data `map_batches` with an actor pool, CPU or GPU).

The dataset is the list of batch starts; each actor reads its batches' images itself from the
sample files (so the files must be readable at the same path on every node: the audit's
`executor.scratch_dir` on a shared volume) and returns only per-sample outputs, which stream
back to the driver as they are produced (Ray Data's streaming executor keeps a bounded number
of batches in flight). Ray is an optional dependency (`pip install 'relevance-auditor[ray]'`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from auditor import errors
from auditor.config.executor import ExecutorSettings
from auditor.data.images import ImageSource
from auditor.errors import AuditorError, ConfigError
from auditor.execution import progress
from auditor.execution.base import BatchResult, Executor, M, PassTask
from auditor.logs import AUDITOR_LOGGER, route_library_logs

ROW = "__row__"
#: the loggers Ray and Ray Data configure with handlers of their own
RAY_LOGGERS = ("ray", "ray.data")


class _Worker:
    """A Ray actor's state: the model (moved to the GPU when the actor has one), the pass and
    the images it reads from."""

    def __init__(self, model: M, task: PassTask[M], images: ImageSource, batch_size: int):
        import ray
        import torch

        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        self.model = model.to("cuda") if ray.get_gpu_ids() else model
        self.task, self.images, self.batch_size = task, images, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            batches = [self.images.batch(int(start), self.batch_size) for start in batch["start"]]
            results = [self.task(self.model, images, rows) for rows, images in batches]
        except AuditorError as err:  # Ray Data keeps only the text of a worker's exception
            raise RuntimeError(_carry(err)) from err
        out = {name: np.concatenate([r[name] for r in results]) for name in results[0]}
        out[ROW] = np.concatenate([rows for rows, _ in batches])
        return out


class RayExecutor(Executor):
    """Connects to (or starts) a Ray cluster; `close()` shuts down a cluster it started."""

    def __init__(self, settings: ExecutorSettings):
        try:
            import ray
            import ray.data
        except ImportError as err:
            raise ConfigError(
                "executor.kind is 'ray' but Ray is not installed",
                "pip install 'relevance-auditor[ray]' (or use executor.kind: local)",
            ) from err
        self.settings = settings
        self._started = False
        route_library_logs(RAY_LOGGERS, _ray_level())  # before ray.init logs anything
        if not ray.is_initialized():
            self._started = True
            self._init(ray, settings)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the auditor shows its own
        context.print_on_execution_start = False
        route_library_logs(RAY_LOGGERS, _ray_level())  # ray.data set up its own handlers on import

    @staticmethod
    def _init(ray: Any, settings: ExecutorSettings) -> None:
        # Ray's logging stays the auditor's (route_library_logs): no handlers of Ray's own
        options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if settings.address in ("auto", "local"):
            if settings.address == "auto":
                try:
                    ray.init(address="auto", **options)
                    return
                except ConnectionError:
                    pass  # no running cluster: start a local one
            needed = math.ceil(settings.num_workers * settings.cpus_per_worker)
            ray.init(num_cpus=max(needed, os.cpu_count() or 1), **options)
            return
        try:
            ray.init(address=settings.address, **options)
        except Exception as err:  # Ray raises several types for an unreachable cluster
            raise AuditorError(
                f"cannot connect to the Ray cluster at {settings.address}: {str(err).splitlines()[0]}",
                "check executor.address (ray://host:10001) and that the cluster is running",
            ) from err

    def _map(
        self, task: PassTask[M], model: M, images: ImageSource, batch_size: int
    ) -> Iterator[BatchResult]:
        import ray.data

        starts = [{"start": start} for start in range(0, len(images), batch_size)]
        dataset = ray.data.from_items(starts, override_num_blocks=min(len(starts), 4 * self.settings.num_workers))
        mapped = dataset.map_batches(
            _Worker,
            fn_constructor_args=(model, task, images, batch_size),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=self.settings.num_workers),
            num_cpus=self.settings.cpus_per_worker,
            num_gpus=self.settings.gpus_per_worker,
        )
        try:
            for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
                rows = batch.pop(ROW)
                yield BatchResult(rows, batch)
        except Exception as err:  # a worker's error arrives wrapped by Ray
            found = _user_error(err)
            if found is err:
                raise
            raise found from err

    def close(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
            self._started = False


def _ray_level() -> int:
    """Ray's records at the auditor's level, at least WARNING; with `--quiet` (no progress
    bars) its warnings too are left out, errors stay."""
    level = max(logging.getLogger(AUDITOR_LOGGER).getEffectiveLevel(), logging.WARNING)
    return level if progress.enabled else max(level, logging.ERROR)


_CARRIED = re.compile(r"<<auditor-error (\{.*?\}) auditor-error>>", re.DOTALL)


def _carry(err: AuditorError) -> str:
    """An auditor error as text that survives Ray's wrapping (`_user_error` reads it back)."""
    fields = {"type": type(err).__name__, "what": err.what, "fix": err.fix}
    return f"<<auditor-error {json.dumps(fields)} auditor-error>>"


def _user_error(err: BaseException) -> BaseException:
    """The auditor's own error that a worker met (a bad sample file), rebuilt from the text
    Ray's wrappers keep, so that it reaches the user as one line; else `err`."""
    found = _CARRIED.search(str(err))
    if found is None:
        return err
    fields = json.loads(found.group(1))
    kind = getattr(errors, fields["type"], None)
    if not (isinstance(kind, type) and issubclass(kind, AuditorError)):
        kind = AuditorError
    return kind(fields["what"], fields["fix"])
