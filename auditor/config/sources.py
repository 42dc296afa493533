"""The audited model and the named sample sets an audit reads."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from auditor.config.strict import StrictModel

#: a sample-set name: a safe file-name component (it prefixes sample ids and labels reports)
SAMPLE_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
    outputs: Literal["auto", "logits", "probabilities"] = Field(
        default="auto",
        description="what the model returns; auto: logits, or probabilities when the graph ends "
        "in Softmax / Sigmoid (audited on the logits before it); probabilities without such an "
        "ending are audited as log-probabilities",
    )


class SampleSource(StrictModel):
    """One named sample set: an .npz file or an image folder, from MLflow or a local path."""

    name: str = Field(description="1-64 letters, digits, '.', '_' and '-', not starting with '.'")
    uri: str = Field(description="runs:/ID/path, mlflow-artifacts:/..., or a local path")
    role: Literal["reference", "production"] = Field(
        default="production",
        description="reference: samples the model is known to handle (validation, training); "
        "production: the audited traffic",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not SAMPLE_SET_NAME.fullmatch(name):
            raise ValueError(
                f"sample set name {name!r} may hold only letters, digits, '.', '_' and '-' "
                "(1-64 characters, the first a letter or digit)"
            )
        return name
