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


class SampleColumns(StrictModel):
    """Which columns of a table (Parquet) sample set hold what; only `image` is required."""

    image: str = Field(
        default="image",
        description="encoded image bytes (PNG/JPEG; or a struct with a 'bytes' field), or image "
        "paths / URIs (relative paths are relative to the table's folder)",
    )
    label: str | None = Field(default=None, description="int class index; null = unknown")
    id: str | None = Field(default=None, description="unique sample ids (default: <set>/<row>)")
    group: str | None = Field(
        default=None, description="metadata column the per-group metrics split by (site, device)"
    )


class SampleSource(StrictModel):
    """One named sample set: an .npz file, an image folder, a Parquet table or a dataset logged
    with `mlflow.log_input`, from MLflow or a local path."""

    name: str = Field(description="1-64 letters, digits, '.', '_' and '-', not starting with '.'")
    uri: str = Field(
        description="runs:/ID/path, mlflow-artifacts:/..., a local path, or a logged dataset: "
        "dataset:runs:/ID or dataset:models:/name/3 (optionally ?name=...&context=...)"
    )
    columns: SampleColumns = Field(
        default_factory=SampleColumns, description="the columns of a Parquet sample set"
    )
    class_names: list[str] | None = Field(
        default=None, description="names of the class indices of a Parquet set's labels"
    )
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
