"""Resolve models and sample files from MLflow (registry, runs, artefact store) or local paths.

MLflow's HTTP client retries a failing request 7 times with exponential backoff and waits up
to 120 s per request, so an unreachable server would stall an audit for minutes. Every remote
call here first runs `check_tracking_store` (one `/health` request with a short timeout; a local
store must exist) and bounds MLflow's retries and timeout for this process unless the user set
them explicitly.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import onnx
import requests
import torch
from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from auditor.errors import MlflowUnreachableError, ModelLoadError, SampleError
from auditor.model.onnx import check_runtime_parity, load_onnx, random_input, read_onnx
from auditor.model.onnx.reading import with_input_size
from auditor.redaction import redact
from auditor.results import ModelRef
from auditor.tracking.datasets import fetch_dataset, is_dataset_reference

TRUST_FIX = "set model.trusted: true in the config if you trust the source"
REMOTE_SCHEMES = (
    "runs",
    "models",
    "mlflow-artifacts",
    "http",
    "https",
    "s3",
    "gs",
    "wasbs",
    "dbfs",
)
# Process-wide bounds for MLflow's HTTP client; an explicit environment setting wins.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@dataclass(frozen=True)
class LoadedModel:
    """A model artefact as loaded: exactly one of `program` (pt2, `ref.flavor` "pytorch-pt2"),
    `module` (pickle, "pytorch-pickle") and `graph` (ONNX imported into aten operations,
    "onnx") is set."""

    ref: ModelRef
    program: torch.export.ExportedProgram | None
    module: torch.nn.Module | None
    input_example: np.ndarray | None
    graph: torch.fx.GraphModule | None = None


def check_tracking_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast with `MlflowUnreachableError` if an http(s) tracking server does not answer
    `/health` within `timeout` seconds; other URIs (sqlite:, file:, paths) need no server."""
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        return
    try:
        response = requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout)
        reason = None if response.ok else f"/health answered HTTP {response.status_code}"
    except requests.Timeout:
        reason = f"no answer within {timeout:g} s"
    except requests.RequestException as err:
        reason = _short_reason(err)
    if reason is not None:
        raise MlflowUnreachableError(
            f"MLflow tracking server {redact(tracking_uri)} is unreachable: {redact(reason)}",
            "start the server or set tracking_uri / MLFLOW_TRACKING_URI",
        )


def check_tracking_store(tracking_uri: str) -> None:
    """Before anything is read from MLflow: an http(s) server answers (`check_tracking_server`),
    and a local store (`sqlite:///file`, `file:` or a path) exists. MLflow would otherwise
    create an empty store on first use and then report the model as missing; an audit only
    reads, so it never creates a store."""
    check_tracking_server(tracking_uri)
    store = _local_store_path(tracking_uri)
    if store is not None and not store.exists():
        raise MlflowUnreachableError(
            f"MLflow tracking store {redact(tracking_uri)} does not exist ({store} is missing)",
            "set tracking_uri / MLFLOW_TRACKING_URI to the store the model was logged to",
        )


def _local_store_path(tracking_uri: str) -> Path | None:
    """The file or folder of a local tracking store; None for a server or an in-memory one."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        database = make_url(tracking_uri).database
        return Path(database) if database and database != ":memory:" else None
    if parsed.scheme in ("", "file"):
        return Path(parsed.path)
    return None


def load_model(
    uri: str, *, tracking_uri: str, trusted: bool, input_size: tuple[int, int] | None = None
) -> LoadedModel:
    """Load a model given as `models:/name@alias`, `models:/name/3`, `models:/<logged model
    id>`, `runs:/<run_id>/<path>` or a local directory holding an `MLmodel` file.

    The `pytorch` flavour is loaded where present; a model that also has the `onnx` flavour
    must then give the same outputs under ONNX Runtime (`ModelLoadError` otherwise). A model
    with the `onnx` flavour only is imported into aten operations (`LoadedModel.graph`) and
    checked against ONNX Runtime; ONNX files hold no pickles, so they need no trust.

    MLflow 3 logs PyTorch models as `torch.export` archives (`data/model.pt2`); they are
    returned as an `ExportedProgram` so that the graph keeps its module-path metadata.
    `torch.export.load` unpickles the archive's weights and constants without restriction,
    so it is as dangerous as a pickle from an untrusted source. Unless the source is trusted
    (`trusted=True`, or `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true` set explicitly: MLflow
    itself defaults that variable to true and then checks nothing), the archive must first pass
    the same pickle-free check `mlflow.pytorch.load_model` applies (every record is metadata or
    accepted by torch's `weights_only` unpickler); if that check is not available in the
    installed MLflow the archive is refused rather than loaded unchecked. Pickled eager
    modules (`data/model.pth`) load only from trusted sources, through `mlflow.pytorch`.

    `input_size` (`preprocess.size`) stands for an ONNX model's symbolic image height and width.
    """
    local = _local_path(uri)
    if local is not None:
        if not local.exists():
            raise ModelLoadError(
                f"model path {uri} does not exist", "check model.uri in the config"
            )
        if not (local / "MLmodel").is_file():
            raise ModelLoadError(
                f"model path {uri} holds no MLmodel file",
                "pass a directory written by mlflow.pytorch / mlflow.onnx save_model, or a model URI",
            )
        return _load_dir(local, ModelRef(uri, local.resolve().name, None, ""), trusted, input_size)
    check_tracking_store(tracking_uri)
    _bound_http_retries()
    ref, download_uri = _resolve(uri, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="auditor-model-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                download_uri, dst_path=tmp, tracking_uri=tracking_uri, registry_uri=tracking_uri
            )
        except MlflowException as err:
            check_tracking_server(tracking_uri)  # the server went away mid-download: say so
            raise ModelLoadError(
                f"model URI {uri} could not be downloaded: {_short_reason(err)}",
                "check the run id and artefact path",
            ) from err
        if not (Path(path) / "MLmodel").is_file():
            raise ModelLoadError(
                f"model URI {uri} holds no MLmodel file", "point the URI at a logged MLflow model"
            )
        return _load_dir(Path(path), ref, trusted, input_size)


def download_samples(uri: str, *, tracking_uri: str, into: Path) -> Path:
    """Return a local path for a sample file or folder: `runs:/...`, `mlflow-artifacts:/...` and
    `models:/...` are downloaded into the folder `into` (the caller owns and removes it); local
    paths are returned as is; a `dataset:` reference is resolved to its logged dataset's source
    (`auditor.tracking.datasets`). A server that stops answering during the download is an
    `MlflowUnreachableError`, any other failed download a `SampleError`."""
    if is_dataset_reference(uri):
        check_tracking_server(tracking_uri)
        _bound_http_retries()
        into.mkdir(parents=True, exist_ok=True)
        return fetch_dataset(
            uri,
            tracking_uri=tracking_uri,
            into=into,
            download=lambda source: download_samples(source, tracking_uri=tracking_uri, into=into),
        )
    local = _local_path(uri)
    if local is not None:
        if not local.exists():
            raise SampleError(
                f"sample file {uri} does not exist", "check samples[].uri in the config"
            )
        return local
    check_tracking_store(tracking_uri)
    _bound_http_retries()
    try:
        path = mlflow.artifacts.download_artifacts(
            uri,
            dst_path=str(into),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
    except MlflowException as err:
        check_tracking_server(tracking_uri)  # the server went away mid-download: say so
        raise SampleError(
            f"sample URI {uri} could not be downloaded: {_short_reason(err)}",
            "check the run id and artefact path",
        ) from err
    return Path(path)


def _local_path(uri: str) -> Path | None:
    """The local path a URI names (plain path or file: URI), or None for a remote URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme in REMOTE_SCHEMES:
        return None
    return Path(uri)


def _resolve(uri: str, tracking_uri: str) -> tuple[ModelRef, str]:
    """The model reference and the URI to download; registry URIs are pinned to the artefacts of
    the version resolved here, so that an alias moving meanwhile cannot mix two versions."""
    last_part = uri.rstrip("/").rsplit("/", 1)[-1]
    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/") :].split("/", 1)[0]
        return ModelRef(uri, last_part, None, "", run_id), uri
    if not uri.startswith("models:/"):
        return ModelRef(uri, last_part, None, ""), uri
    spec = uri[len("models:/") :]
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if "@" in spec:
            name, alias = spec.rsplit("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        elif "/" not in spec:  # an MLflow 3 logged-model id, models:/m-...
            logged = client.get_logged_model(spec)
            return ModelRef(uri, logged.name, None, "", logged.source_run_id), logged.artifact_location
        elif re.fullmatch(r"[^/]+/\d+", spec):
            name, number = spec.rsplit("/", 1)
            version = client.get_model_version(name, number)
        else:
            raise ModelLoadError(
                f"model URI {uri} is not of the form models:/name@alias, models:/name/<version> "
                "or models:/<model id>",
                "use a registry alias or a version number",
            )
    except MlflowException as err:
        raise ModelLoadError(
            f"model URI {uri} does not resolve: {_short_reason(err)}",
            "check the name and alias in the MLflow registry",
        ) from err
    ref = ModelRef(uri, version.name, str(version.version), "", version.run_id)
    # the version's own artefact location: `download_artifacts` would look `models:/` URIs up
    # in the default registry (./mlflow.db), not in the one given as `registry_uri`
    return ref, client.get_model_version_download_uri(version.name, str(version.version))


def _load_dir(
    path: Path, ref: ModelRef, trusted: bool, input_size: tuple[int, int] | None
) -> LoadedModel:
    """Load the pytorch flavour of a local MLflow model directory, checked against its onnx
    flavour if it has both; else its onnx flavour."""
    model = Model.load(str(path / "MLmodel"))
    example = model.load_input_example(str(path))
    example = example if isinstance(example, np.ndarray) else None
    onnx_conf = model.flavors.get("onnx")
    if "pytorch" in model.flavors:
        loaded = _load_pytorch(path, model.flavors["pytorch"], ref, trusted, example)
        if onnx_conf is not None:
            _check_flavours_agree(loaded, path / onnx_conf["data"])
        return loaded
    if onnx_conf is not None:
        proto = read_onnx(path / onnx_conf["data"], name=ref.uri)
        parity_input = _parity_input(with_input_size(proto, input_size), example, ref.uri)
        graph = load_onnx(proto, example=parity_input, name=ref.uri, input_size=input_size)
        return LoadedModel(_with_flavor(ref, "onnx"), None, None, example, graph)
    raise ModelLoadError(
        f"model URI {ref.uri} has no pytorch or onnx flavour (has {', '.join(model.flavors)})",
        "log the model with mlflow.pytorch.log_model or mlflow.onnx.log_model",
    )


def _check_flavours_agree(loaded: LoadedModel, onnx_path: Path) -> None:
    """Raise `ModelLoadError` unless the loaded pytorch flavour and the onnx flavour give the
    same outputs on a random input."""
    uri = loaded.ref.uri
    proto = read_onnx(onnx_path, name=uri)
    run = loaded.program.module() if loaded.program is not None else loaded.module
    check_runtime_parity(
        proto,
        run,
        _parity_input(proto, loaded.input_example, uri),
        name=uri,
        what="the pytorch flavour",
        fix="log both flavours from the same trained model",
    )


def _parity_input(proto: onnx.ModelProto, example: np.ndarray | None, uri: str) -> torch.Tensor:
    """A random input of the input example's shape, else of the ONNX model's input shape."""
    return random_input(proto, name=uri, shape=None if example is None else example.shape)


def _load_pytorch(
    path: Path, conf: dict, ref: ModelRef, trusted: bool, example: np.ndarray | None
) -> LoadedModel:
    """Load the pytorch flavour: a pt2 archive (pickle-free check unless trusted) or, from
    trusted sources only, a pickled module."""
    trusted = trusted or _pickle_explicitly_allowed()
    data = path / conf["model_data"]
    if (data / "model.pt2").is_file():
        if not trusted:
            _check_pt2_pickle_free(data / "model.pt2", ref.uri)
        try:
            program = torch.export.load(str(data / "model.pt2"))
        except Exception as err:  # torch raises many kinds on a corrupt or foreign archive
            raise ModelLoadError(
                f"model URI {ref.uri}: the pt2 archive cannot be loaded: {_short_reason(err)}",
                "re-log the model with mlflow.pytorch.log_model under this torch version",
            ) from err
        return LoadedModel(_with_flavor(ref, "pytorch-pt2"), program, None, example)
    if not trusted:
        raise ModelLoadError(
            f"model URI {ref.uri} is a pickled PyTorch model; unpickling runs arbitrary code",
            TRUST_FIX,
        )
    try:
        with _env(MLFLOW_ALLOW_PICKLE_DESERIALIZATION.name, "true"):
            module = mlflow.pytorch.load_model(str(path), map_location="cpu", weights_only=False)
    except Exception as err:  # unpickling fails with any exception, e.g. a class not importable
        raise ModelLoadError(
            f"model URI {ref.uri}: the pickled model cannot be loaded: {_short_reason(err)}",
            "make the model's class importable (log it with code_paths) or log it as pt2",
        ) from err
    return LoadedModel(_with_flavor(ref, "pytorch-pickle"), None, module.eval(), example)


def _check_pt2_pickle_free(archive: Path, uri: str) -> None:
    """Apply MLflow's own pickle-free check of pt2 archives (private in MLflow, so fail closed
    if a future version drops it)."""
    check = getattr(mlflow.pytorch, "_validate_pt2_archive_is_pickle_free", None)
    if check is None:
        raise ModelLoadError(
            f"model URI {uri}: this MLflow version cannot verify that the pt2 archive is "
            "pickle-free",
            TRUST_FIX,
        )
    try:
        check(str(archive))
    except MlflowException as err:
        raise ModelLoadError(
            f"model URI {uri}: the pt2 archive failed MLflow's pickle-free check: "
            f"{_short_reason(err)}",
            TRUST_FIX,
        ) from err


def _pickle_explicitly_allowed() -> bool:
    """True only if the user set MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true; MLflow itself
    defaults the variable to true, so its `.get()` cannot tell a deliberate choice."""
    name = MLFLOW_ALLOW_PICKLE_DESERIALIZATION.name
    return os.environ.get(name, "").strip().lower() in ("true", "1")


def _with_flavor(ref: ModelRef, flavor: str) -> ModelRef:
    return ModelRef(ref.uri, ref.name, ref.version, flavor, ref.run_id)


def _bound_http_retries() -> None:
    for name, value in HTTP_BOUNDS.items():
        os.environ.setdefault(name, value)


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Set one environment variable for the duration of the block."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def _short_reason(err: Exception) -> str:
    """One short line out of a (possibly multi-line, nested) exception message."""
    text = getattr(err, "message", None) or str(err)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return errno.group(1).strip().lower()
    line = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return line if len(line) <= 200 else line[:197] + "..."
