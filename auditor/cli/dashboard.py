"""`auditor dashboard`: the review dashboard (`dashboards/app.py`) under `streamlit run`.

The database URL reaches the app as `AUDITOR_DB_URL`, the variable the auditor itself reads.
After its checks the command replaces itself with Streamlit (`os.execve`, same pid), so the
signals a supervisor sends the command (SIGTERM from Kubernetes or compose, Ctrl-C) reach
Streamlit itself and no server outlives the command.
The app lives beside the `auditor` package in a source checkout (it is not installed).
"""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated

import typer

from auditor.dashboard_access import LOGIN_FIX, auth_mode, read_secrets
from auditor.errors import AuditorError

APP = Path(__file__).resolve().parents[2] / "dashboards" / "app.py"


def streamlit_command(app: Path, host: str, port: int) -> list[str]:
    """`streamlit run` of `app` on host:port, headless, without usage statistics."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


def check_login(host: str) -> None:
    """Refuse (`AuditorError`) to serve a non-loopback address without a login in the
    Streamlit secrets the app will read; the pages would refuse anyway, but the server would
    run, reachable, for nothing."""
    from streamlit import config

    secrets = read_secrets(config.get_option("secrets.files"))
    if auth_mode(secrets, host) == "refused":
        raise AuditorError(
            f"the dashboard would serve {host} without a login (no [auth] or [dashboard] "
            "password in .streamlit/secrets.toml)",
            f"{LOGIN_FIX}, or serve on loopback only: --host 127.0.0.1",
        )


def dashboard(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="findings database URL (default: $AUDITOR_DB_URL, else .auditor/auditor.db)",
        ),
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to serve on")] = 8501,
    host: Annotated[
        str,
        typer.Option(
            help="address to bind; without a login in secrets.toml only loopback runs open"
        ),
    ] = "127.0.0.1",
) -> None:
    """Serve the review dashboard over the findings database until interrupted."""
    from auditor.config import default_store_url
    from auditor.redaction import redact
    from auditor.store import AuditStore

    if find_spec("streamlit") is None:
        raise AuditorError(
            "streamlit is not installed", 'pip install "relevance-auditor[dashboard]"'
        )
    if not APP.is_file():
        raise AuditorError(
            f"the dashboard app {APP} is missing", "run the auditor from a source checkout"
        )
    check_login(host)
    url = db or default_store_url()
    AuditStore(url, create=False).close()  # fail here, in one line, on a bad database
    typer.echo(f"dashboard on http://{host}:{port} over {redact(url)}")
    env = {**os.environ, "AUDITOR_DB_URL": url}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, streamlit_command(APP, host, port), env)
