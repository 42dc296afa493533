"""The one extension mechanism: a named registry per extension point (probes, relevance
methods, LRP composites, finding kinds, alert sinks), filled by a decorator inside the project
and by entry points of installed distributions.

An extension point is a `Registry`. A built-in registers with the decorator::

    PROBES = Registry("probe", "relevance_auditor.probes")

    @PROBES.register("grayscale")
    class Grayscale(Probe): ...

A plug-in distribution declares the same object under the registry's entry point group (in its
`pyproject.toml`: `[project.entry-points."relevance_auditor.probes"] my_probe =
"my_pkg.probes:MyProbe"`); the entry point's name is the name it is registered under. Entry
points are loaded once, the first time a name is looked up that no built-in has (or the names
are listed); a plug-in that fails to load is skipped with a warning, so a broken plug-in never
breaks an audit that does not use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class UnknownExtensionError(ValueError):
    """A name that no built-in and no installed plug-in registered."""


class Registry(Generic[T]):
    """Objects of one extension point by name.

    `what` names the kind of object in messages ("probe"); `group` is the entry point group of
    plug-ins; `validate(name, obj)`, if given, raises TypeError for an object that does not fit
    the extension point (it runs for built-ins and plug-ins alike).
    """

    def __init__(
        self,
        what: str,
        group: str,
        validate: Callable[[str, T], None] | None = None,
    ) -> None:
        self.what = what
        self.group = group
        self._validate = validate
        self._entries: dict[str, T] = {}
        self._discovered = False

    def add(self, name: str, obj: T) -> T:
        """Register `obj` under `name`; the same name for another object is an error."""
        if self._validate is not None:
            self._validate(name, obj)
        known = self._entries.get(name)
        if known is not None and known is not obj:
            raise ValueError(f"{self.what} '{name}' registered twice: {known!r} and {obj!r}")
        self._entries[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def decorate(obj: T) -> T:
            return self.add(name, obj)

        return decorate

    def discover(self) -> list[str]:
        """Load the plug-ins of the entry point group (once); returns the names loaded."""
        if self._discovered:
            return []
        self._discovered = True
        loaded = []
        for point in entry_points(group=self.group):
            try:
                self.add(point.name, point.load())
            except Exception as err:  # noqa: BLE001 -- a broken plug-in must not break audits
                logger.warning(
                    "%s plug-in %s = %s not loaded: %s", self.what, point.name, point.value, err
                )
                continue
            loaded.append(point.name)
        return loaded

    def get(self, name: str) -> T:
        """The object registered under `name` (plug-ins included); `UnknownExtensionError`
        names the known ones."""
        if name not in self._entries:
            self.discover()
        if name not in self._entries:
            raise UnknownExtensionError(
                f"unknown {self.what} '{name}'; known: {', '.join(self.names()) or 'none'}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name, plug-ins included, sorted."""
        self.discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._entries:
            self.discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]
