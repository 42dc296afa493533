"""The audited model and the named sample sets an audit reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from auditor.config.strict import StrictModel


class ModelSource(StrictModel):
    """Which model to audit and where to look inside it."""

    uri: str = Field(
        description="models:/name@alias, models:/name/3, runs:/ID/path or a local path"
    )
    layer: str | None = Field(
        default=None,
        description="module path of the audited layer (e.g. layer4); default: last conv block output",
    )
    trusted: bool = Field(
        default=False,
        description="allow pickled (eager) model artefacts; unpickling runs arbitrary code",
    )


class SampleSource(StrictModel):
    """One named sample set: an .npz file or an image folder, from MLflow or a local path."""

    name: str
    uri: str = Field(description="runs:/ID/path, mlflow-artifacts:/..., or a local path")
    role: Literal["reference", "production"] = Field(
        default="production",
        description="reference: samples the model is known to handle (validation, training); "
        "production: the audited traffic",
    )
