"""The probe base class and the probe registry: built-ins by decorator, plug-ins by entry point."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, fields
from importlib.metadata import entry_points
from typing import Any, ClassVar

import torch
from pydantic import TypeAdapter, ValidationError

ENTRY_POINT_GROUP = "relevance_auditor.probes"

logger = logging.getLogger(__name__)


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


_REGISTRY: dict[str, type[Probe]] = {}


def register_probe(cls: type[Probe]) -> type[Probe]:
    """Class decorator: make a probe available under `cls.name` (to configs and `build_probe`)."""
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise TypeError(f"{cls!r} is not a Probe subclass")
    for attribute in ("name", "description"):
        if not isinstance(getattr(cls, attribute, None), str):
            raise TypeError(f"probe class {cls.__qualname__} needs a class attribute '{attribute}'")
    required = [
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    ]
    if required:
        raise TypeError(
            f"probe '{cls.name}': every parameter needs a default, {required} have none"
        )
    known = _REGISTRY.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(
            f"probe '{cls.name}' registered twice: {known.__module__}.{known.__qualname__} "
            f"and {cls.__module__}.{cls.__qualname__}"
        )
    _REGISTRY[cls.name] = cls
    return cls


def discover_probes() -> list[str]:
    """Register the probes that installed distributions declare in the entry point group
    `relevance_auditor.probes`; a plug-in that fails to load is skipped with a warning.
    Returns the names loaded."""
    names = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            names.append(register_probe(point.load()).name)
        except Exception as err:  # noqa: BLE001 -- a broken plug-in must not break audits
            logger.warning("probe plug-in %s = %s not loaded: %s", point.name, point.value, err)
    return names


def known_probes() -> dict[str, str]:
    """Every registered probe (built-in and plug-in), by name, with its description."""
    discover_probes()
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


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
    if name not in _REGISTRY:
        discover_probes()
    if name not in _REGISTRY:
        raise ValueError(f"unknown probe '{name}'; known probes: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
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
