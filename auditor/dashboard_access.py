"""Who may open the review dashboard: the login modes its Streamlit secrets configure, and the
loopback rule for running without one (used by `auditor dashboard` and `dashboards/auth.py`)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

Mode = Literal["oidc", "password", "open", "refused"]
LOOPBACK = ("127.0.0.1", "localhost", "::1")
LOGIN_FIX = "configure `[auth]` (OIDC) or `[dashboard] password` in `.streamlit/secrets.toml`"


def auth_mode(secrets: Mapping[str, Any], address: str | None) -> Mode:
    """OIDC when `[auth]` is configured, else the shared password, else open on a loopback
    address only."""
    if secrets.get("auth"):
        return "oidc"
    if (secrets.get("dashboard") or {}).get("password"):
        return "password"
    return "open" if address in LOOPBACK else "refused"


def read_secrets(files: Iterable[str | Path]) -> dict[str, Any]:
    """The top-level tables of the existing TOML `files`, later files overriding earlier
    ones (as Streamlit merges its `secrets.files`); unreadable files count as empty."""
    merged: dict[str, Any] = {}
    for file in map(Path, files):
        try:
            merged.update(tomllib.loads(file.read_text()))
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return merged
