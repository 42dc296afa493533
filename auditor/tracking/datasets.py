"""Sample sets referenced as datasets logged with `mlflow.log_input` (`mlflow.data`).

A reference names the run that logged the dataset, directly or through a registered model
version (its source run), and optionally the dataset's name and context::

    dataset:runs:/<run_id>
    dataset:models:/<name>/<version>?name=production-2024-06
    dataset:models:/<name>@<alias>?context=production

The dataset's recorded source (`mlflow.data.get_source`) is then fetched: a source with a URI
the artefact store serves (local path, `runs:/`, `mlflow-artifacts:/`, `s3://`, ...) is
downloaded like any sample URI, any other (HTTP, ...) through the source's own `load`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import mlflow.data
from mlflow.entities import DatasetInput
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from auditor.errors import SampleError

PREFIX = "dataset:"
CONTEXT_TAG = "mlflow.data.context"
REFERENCE_FIX = (
    "use dataset:runs:/<run_id> or dataset:models:/<name>/<version> (or @<alias>), "
    "optionally ?name=<dataset name>&context=<context>"
)


def is_dataset_reference(uri: str) -> bool:
    return uri.startswith(PREFIX)


def fetch_dataset(uri: str, *, tracking_uri: str, into: Path, download: Callable[[str], Path]) -> Path:
    """The local path of the dataset `uri` references; `download` fetches a URI the artefact
    store serves (`auditor.tracking.resolve.download_samples`)."""
    dataset = find_dataset(uri, tracking_uri)
    source = mlflow.data.get_source(dataset)
    location = source.to_dict().get("uri")
    if isinstance(location, str) and urlparse(location).scheme not in ("http", "https"):
        return download(location)
    try:
        loaded = source.load(dst_path=str(into))
    except Exception as err:  # each source type fails its own way (HTTP, missing file, ...)
        raise SampleError(
            f"sample URI {uri}: the dataset's source {source.to_json()} cannot be fetched "
            f"({type(err).__name__})",
            "log the dataset with a source the auditor can read (a file path or URL)",
        ) from err
    if not isinstance(loaded, str):
        raise SampleError(
            f"sample URI {uri}: the dataset's source ({source._get_source_type()}) is not a file",
            "log the dataset with mlflow.data.from_pandas(..., source=<path or URL of a .parquet or .npz>)",
        )
    return Path(loaded)


def find_dataset(uri: str, tracking_uri: str) -> DatasetInput:
    """The one dataset input of the referenced run matching the reference's name / context."""
    parsed = urlparse(uri[len(PREFIX) :])
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    unknown = set(query) - {"name", "context"}
    if unknown or parsed.scheme not in ("runs", "models"):
        raise SampleError(f"sample URI {uri} is not a dataset reference", REFERENCE_FIX)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run_id = _run_id(client, parsed.scheme, parsed.path.strip("/"), uri)
    try:
        inputs = client.get_run(run_id).inputs.dataset_inputs
    except MlflowException as err:
        raise SampleError(f"sample URI {uri}: run {run_id} not found", REFERENCE_FIX) from err
    matching = [
        d
        for d in inputs
        if query.get("name") in (None, d.dataset.name)
        and query.get("context") in (None, _context(d))
    ]
    if len(matching) != 1:
        logged = ", ".join(f"{d.dataset.name} ({_context(d) or 'no context'})" for d in inputs)
        problem = "no dataset" if not matching else f"{len(matching)} datasets"
        raise SampleError(
            f"sample URI {uri}: run {run_id} logged {problem} matching the reference "
            f"(logged: {logged or 'none'})",
            "add ?name=<dataset name> or ?context=<context> to pick one",
        )
    return matching[0]


def _run_id(client: MlflowClient, scheme: str, path: str, uri: str) -> str:
    """The run a `runs:/ID` or `models:/name/version|@alias` reference names."""
    if scheme == "runs":
        if not path or "/" in path:
            raise SampleError(f"sample URI {uri} does not name one run", REFERENCE_FIX)
        return path
    try:
        if "@" in path:
            name, alias = path.rsplit("@", 1)
            return client.get_model_version_by_alias(name, alias).run_id
        name, _, version = path.rpartition("/")
        if not name or not version.isdigit():
            raise SampleError(f"sample URI {uri} does not name a model version", REFERENCE_FIX)
        return client.get_model_version(name, version).run_id
    except MlflowException as err:
        raise SampleError(f"sample URI {uri}: the model version does not resolve", REFERENCE_FIX) from err


def _context(dataset: DatasetInput) -> str | None:
    return next((t.value for t in dataset.tags if t.key == CONTEXT_TAG), None)
