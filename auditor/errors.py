"""Errors that reach the user as one line: what is wrong, with which input, and how to fix it.

Every failure caused by input (config, model, samples, MLflow, database) is raised as an
`AuditorError`; the CLI prints `error: <message>` and exits non-zero, without a traceback.
"""

from __future__ import annotations


class AuditorError(Exception):
    """A failure the user can fix. `str(err)` is the whole one-line message."""

    exit_code = 2

    def __init__(self, what: str, fix: str | None = None):
        self.what = what
        self.fix = fix
        super().__init__(what if fix is None else f"{what} -- fix: {fix}")


class ConfigError(AuditorError):
    """The audit config does not validate or cannot be read."""


class ModelLoadError(AuditorError):
    """The model URI does not resolve, or the artefact cannot be loaded."""


class LayerNotFoundError(AuditorError):
    """A layer name from the config names no module of the model."""


class LayerNotAuditableError(AuditorError):
    """The audited layer's outputs have no channels over space (a pooled or dense layer)."""


class SampleError(AuditorError):
    """A sample file is missing, corrupt or of the wrong shape."""


class MlflowUnreachableError(AuditorError):
    """The MLflow tracking server does not answer."""


class StoreError(AuditorError):
    """The findings database cannot be reached or migrated."""


class RelevanceError(AuditorError):
    """A relevance method cannot explain an operation of the model."""


class ReportError(AuditorError):
    """The JSON report cannot be written where it was asked for."""


class ArtefactError(AuditorError):
    """The audit's files cannot be written into its artefact folder (full disk, no permission)."""
