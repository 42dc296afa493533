"""The layer contracts of pyproject.toml's [tool.importlinter] hold on the code, and
`lint-imports` fails, naming the contract, when code breaks one."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    """`lint-imports` run from the repository root (where `dashboards` is importable)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_layer_contracts_hold():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    for contract in contracts["contracts"]:
        assert f"{contract['name']} KEPT" in result.stdout
    assert f"Contracts: {len(contracts['contracts'])} kept, 0 broken." in result.stdout


def test_broken_contract_fails_and_is_named(tmp_path: Path):
    # the audit stages run on the model: a contract forbidding that import is broken
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["auditor"]\n\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "audit knows no model"\n'
        'type = "forbidden"\n'
        'source_modules = ["auditor.audit"]\n'
        'forbidden_modules = ["auditor.model"]\n'
    )
    result = lint_imports("--config", str(config))
    assert result.returncode != 0
    assert "audit knows no model BROKEN" in result.stdout
    assert "auditor.audit is not allowed to import auditor.model" in result.stdout
