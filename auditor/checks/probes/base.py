"""The probe base class and the `PROBES` registry: built-ins by decorator, plug-ins by entry point."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any, ClassVar

import torch
from pydantic import TypeAdapter, ValidationError

from auditor.registry import Registry, UnknownExtensionError


@dataclass(frozen=True)
class Probe(ABC):
    """A transform that removes one cue; its dataclass fields are its parameters."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        """N x 3 x H x W in [0, 1] -> the same shape in [0, 1], without the cue."""

    @property
    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def label(self) -> str:
        """The name, with the parameters that differ from their defaults: `blur(sigma=3.0)`."""
        changed = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) != _default(f)
        ]
        return f"{self.name}({', '.join(changed)})" if changed else self.name

    @property
    def spec(self) -> dict[str, Any]:
        """The config entry that rebuilds this probe (`build_probe`)."""
        return {"name": self.name, **self.params}


def _default(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def check_probe_class(name: str, cls: type[Probe]) -> None:
    """The `PROBES` validity check: a `Probe` subclass named `name`, with a description, whose
    every parameter has a default (a config may give the name alone)."""
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise TypeError(f"{cls!r} is not a Probe subclass")
    for attribute in ("name", "description"):
        if not isinstance(getattr(cls, attribute, None), str):
            raise TypeError(f"probe class {cls.__qualname__} needs a class attribute '{attribute}'")
    if cls.name != name:
        raise TypeError(f"probe class {cls.__qualname__} is named '{cls.name}', not '{name}'")
    required = [
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    ]
    if required:
        raise TypeError(f"probe '{name}': every parameter needs a default, {required} have none")


PROBES: Registry[type[Probe]] = Registry("probe", "relevance_auditor.probes", check_probe_class)


def build_probe(entry: str | Mapping[str, Any]) -> Probe:
    """A probe from a config entry: a name (default parameters) or a mapping `{name: ...,
    param: value, ...}`. Unknown names and parameters and invalid values raise ValueError."""
    if isinstance(entry, str):
        name, params = entry, {}
    else:
        params = dict(entry)
        if "name" not in params:
            raise ValueError(
                "a probe with parameters needs a 'name', e.g. {name: blur, sigma: 2.0}"
            )
        name = params.pop("name")
    if name not in PROBES:
        raise UnknownExtensionError(
            f"unknown probe '{name}'; known probes: {', '.join(PROBES.names())}"
        )
    cls = PROBES.get(name)
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"probe '{name}' has no parameter {unknown}; its parameters: {allowed}")
    try:
        return TypeAdapter(cls).validate_python(params)
    except ValidationError as err:
        first = err.errors()[0]
        where = "".join(f"{p}: " for p in first["loc"][:1])
        problem = first["ctx"]["error"] if first["type"] == "value_error" else first["msg"]
        raise ValueError(f"probe '{name}': {where}{problem}") from None
