"""Test helpers for extension points: a plug-in distribution on sys.path, and a fresh copy of
a registry (the built-ins, plug-ins discovered anew) that the test may fill and that is put back
afterwards."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from auditor.registry import Registry


def install_plugin(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    source: str,
    entry_points: dict[str, dict[str, str]],
) -> None:
    """Put a distribution on sys.path: module `module` with `source`, declaring
    `entry_points` ({group: {name: "module:object"}}) in its `*.dist-info/entry_points.txt`."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items())
            for group, points in entry_points.items()
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(module, None)  # a module of the same name from an earlier test's folder


def fresh_registry(
    monkeypatch: pytest.MonkeyPatch,
    owner: ModuleType,
    attribute: str,
    validate: Callable[[str, Any], None],
) -> Registry:
    """Replace the registry `owner.attribute` by one holding its entries, whose plug-ins are
    discovered anew on the next lookup (the original is restored after the test)."""
    original: Registry = getattr(owner, attribute)
    fresh: Registry = Registry(original.what, original.group, validate)
    for name, obj in original.items():
        fresh.add(name, obj)
    monkeypatch.setattr(owner, attribute, fresh)
    return fresh
