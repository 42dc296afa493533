"""Who may use the dashboard, and who a verdict is recorded for.

From Streamlit secrets (`.streamlit/secrets.toml`, README "Dashboard"):

* `[auth]` (redirect_uri, cookie_secret, client_id, client_secret, server_metadata_url, or one
  sub-table per provider): Streamlit's built-in OIDC login (`st.login`, needs Authlib); the
  reviewer is the logged-in user's e-mail (else name).
* `[dashboard] password = "..."`: a shared password; the reviewer enters their name with it.
* neither: the app runs open, and only when it is bound to a loopback address
  (`server.address` 127.0.0.1 / localhost / ::1, as `auditor dashboard` does by default);
  every page then says so in a banner, and verdicts carry the name entered in the sidebar.
  Bound to any other address without a login, it refuses to show anything (and `auditor
  dashboard` refuses to start). The rule itself is `auditor.dashboard_access.auth_mode`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from auditor.dashboard_access import Mode, auth_mode

IDENTITY = "dashboard_identity"
OPEN_BANNER = (
    "Open access: no login is configured, so anyone who can reach this address can read and "
    "review findings. Configure `[auth]` (OIDC) or `[dashboard] password` in "
    "`.streamlit/secrets.toml` before sharing it."
)


@dataclass(frozen=True)
class Identity:
    """How the user got in, and the name their verdicts are stored under (None: not given)."""

    mode: Mode
    reviewer: str | None


def _secrets() -> dict[str, Any]:
    try:
        return st.secrets.to_dict()
    except FileNotFoundError:  # no secrets file anywhere
        return {}


def gate() -> Identity:
    """Let the user in (or stop the page with a login form) and remember who they are."""
    secrets = _secrets()
    mode = auth_mode(secrets, st.get_option("server.address"))
    if mode == "oidc":
        identity = _oidc(secrets["auth"])
    elif mode == "password":
        identity = _password(str(secrets["dashboard"]["password"]))
    elif mode == "open":
        st.warning(OPEN_BANNER, icon=":material/lock_open:")
        name = st.sidebar.text_input(
            "Your name", key="reviewer_name", help="stored with your verdicts"
        )
        identity = Identity("open", name.strip() or None)
    else:
        st.error(
            "No login is configured and the dashboard is not bound to a loopback address. "
            "Fix: configure `[auth]` or `[dashboard] password` in `.streamlit/secrets.toml`, "
            "or run it with `--server.address 127.0.0.1`."
        )
        st.stop()
    st.session_state[IDENTITY] = identity
    return identity


def identity() -> Identity:
    """The identity `gate` established for this session."""
    return st.session_state[IDENTITY]


def _oidc(settings: Mapping[str, Any]) -> Identity:
    if not st.user.is_logged_in:
        st.title("Relevance auditor")
        st.write("Log in to review the auditor's findings.")
        providers = [name for name, value in settings.items() if isinstance(value, Mapping)]
        if "client_id" in settings or not providers:
            st.button("Log in", on_click=st.login)
        for provider in providers:
            st.button(f"Log in with {provider}", on_click=st.login, args=(provider,))
        st.stop()
    reviewer = str(st.user.get("email") or st.user.get("name") or "")
    st.sidebar.caption(f"Signed in as {reviewer}")
    st.sidebar.button("Log out", on_click=st.logout)
    return Identity("oidc", reviewer or None)


def _password(password: str) -> Identity:
    name = st.session_state.get("password_reviewer")
    if name is None:
        st.title("Relevance auditor")
        with st.form("login"):
            entered_name = st.text_input("Your name")
            entered = st.text_input("Password", type="password")
            submitted = st.form_submit_button("Log in")
        if submitted:
            if not entered_name.strip():
                st.error("Enter your name: it is stored with your verdicts.")
            elif hmac.compare_digest(entered.encode(), password.encode()):
                st.session_state["password_reviewer"] = entered_name.strip()
                st.rerun()
            else:
                st.error("Wrong password.")
        st.stop()
    st.sidebar.caption(f"Signed in as {name}")
    if st.sidebar.button("Log out"):
        del st.session_state["password_reviewer"]
        st.rerun()
    return Identity("password", name)
