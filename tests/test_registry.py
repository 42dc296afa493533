"""The extension mechanism: built-ins by decorator, plug-ins by entry point, one error style."""

from __future__ import annotations

import logging

import pytest

from auditor.registry import Registry, UnknownExtensionError


def _plugin_distribution(tmp_path, monkeypatch, group: str) -> None:
    (tmp_path / "team_ext.py").write_text("def shout(text):\n    return text.upper()\n")
    dist = tmp_path / "team_ext-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: team-ext\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{group}]\nshout = team_ext:shout\nbroken = team_ext_missing:nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_builtins_register_by_decorator_and_unknown_names_list_the_known_ones():
    registry: Registry = Registry("transform", "relevance_auditor.test_none")

    @registry.register("double")
    def double(x):
        return 2 * x

    assert registry.get("double") is double
    assert registry.names() == ["double"] and "double" in registry
    with pytest.raises(UnknownExtensionError, match="unknown transform 'triple'; known: double"):
        registry.get("triple")


def test_a_second_object_under_one_name_is_refused():
    registry: Registry = Registry("transform", "relevance_auditor.test_none")
    registry.add("same", len)
    registry.add("same", len)  # the same object again is harmless (module re-import)
    with pytest.raises(ValueError, match="transform 'same' registered twice"):
        registry.add("same", abs)


def test_validate_runs_for_every_object():
    def callable_only(name, obj):
        if not callable(obj):
            raise TypeError(f"{name} is not callable")

    registry: Registry = Registry("transform", "relevance_auditor.test_none", callable_only)
    with pytest.raises(TypeError, match="x is not callable"):
        registry.add("x", 3)


def test_plugins_load_from_entry_points_and_a_broken_one_is_skipped(tmp_path, monkeypatch, caplog):
    group = "relevance_auditor.test_transforms"
    _plugin_distribution(tmp_path, monkeypatch, group)
    registry: Registry = Registry("transform", group)

    with caplog.at_level(logging.WARNING, logger="auditor.registry"):
        assert registry.get("shout")("hi") == "HI"
    assert registry.names() == ["shout"]
    assert "transform plug-in broken = team_ext_missing:nothing not loaded" in caplog.text
