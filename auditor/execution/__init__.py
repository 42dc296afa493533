"""Executors of the heavy passes: `local` (batches streamed in this process) and `ray`
(batches mapped over the actors of a Ray cluster). `make_executor(settings)` picks one."""

from __future__ import annotations

from auditor.config.executor import ExecutorSettings
from auditor.execution.base import BatchResult, Executor, PassTask
from auditor.execution.local import LocalExecutor

__all__ = ["BatchResult", "Executor", "LocalExecutor", "PassTask", "make_executor"]


def make_executor(settings: ExecutorSettings) -> Executor:
    """The executor `settings.kind` names (Ray is imported only when asked for)."""
    if settings.kind == "ray":
        from auditor.execution.ray_cluster import RayExecutor

        return RayExecutor(settings)
    return LocalExecutor()
