"""Opening the findings database and migrating its schema with Alembic (no alembic.ini).

`auditor db upgrade` calls `upgrade(url)`; `AuditStore` calls `upgrade_locked(url)` itself for
SQLite files. SQLite files run in WAL mode with a busy timeout, so several auditor processes
can share one (writers queue, readers never wait).
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import auditor_migrations
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from auditor.errors import StoreError
from auditor.redaction import redact

SCRIPT_LOCATION = Path(auditor_migrations.__file__).parent
CONNECT_FIX = "start the server or set store_url / AUDITOR_DB_URL"
CONNECT_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_S = 60


def describe(err: BaseException) -> str:
    """The driver's reason for a database error, on one line."""
    return " ".join(str(getattr(err, "orig", None) or err).split())


def failure_fix(err: BaseException) -> str:
    """The fix to name for a failed transaction: a read-only database (SQLite file or folder
    without write permission, read-only mount, `mode=ro`, a read-only PostgreSQL role or
    replica) is not a server problem."""
    reason = describe(err).lower()
    if "readonly database" in reason or "read-only" in reason or "read only" in reason:
        return (
            "make the database (a SQLite file and its folder) writable for this user, "
            "or set store_url / AUDITOR_DB_URL to a writable database"
        )
    return f"check the database server ({CONNECT_FIX}) and run `auditor db upgrade`"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return None
    return None if database.startswith("file:") else Path(database)


def open_engine(url: str) -> Engine:
    """An engine for the store: SQLite files get their folder, WAL mode and a busy timeout,
    PostgreSQL the psycopg driver (for a bare `postgresql://`) and a connect timeout. A bad URL
    raises `StoreError`."""
    fix = "use sqlite:///path/to/auditor.db or postgresql+psycopg://user:password@host/db"
    try:
        parsed = make_url(url)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise StoreError(f"database URL {redact(url)}: {backend} is not supported", fix)
        connect_args: dict[str, Any] = {}
        if backend == "postgresql" and "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        if backend == "sqlite":
            connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S
        engine = create_engine(parsed, connect_args=connect_args)
    except (ArgumentError, NoSuchModuleError, ImportError) as err:
        raise StoreError(
            f"cannot use database URL {redact(url)}: {describe(err)}", fix
        ) from err
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        event.listen(engine, "connect", _write_ahead_log)
    return engine


def _write_ahead_log(dbapi_connection: Any, _record: Any) -> None:
    """WAL journal: readers do not block the writer nor it them (persistent in the file)."""
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


def alembic_config(url: str | None = None) -> Config:
    """The Alembic config of the auditor's migrations, for commands beyond `upgrade`
    (downgrade, history, stamp); `migrations/env.py` reads the URL from its attributes."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url is not None:
        config.attributes["url"] = url
    return config


def head() -> str:
    """The newest revision of the migrations shipped with this auditor."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None, f"no migrations in {SCRIPT_LOCATION}"
    return revision


def current(url: str) -> str | None:
    """The revision the database is at; None for an empty database or a missing SQLite file."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return None
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as err:
        raise StoreError(
            f"cannot connect to database {redact(url)}: {describe(err)}", CONNECT_FIX
        ) from err
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database to `revision` (creating the folder of a SQLite file)."""
    try:
        command.upgrade(alembic_config(url), revision)
    except (CommandError, SQLAlchemyError) as err:
        raise StoreError(
            f"cannot migrate database {redact(url)} to {revision}: {describe(err)}",
            f"check that the database is reachable and was created by the auditor ({CONNECT_FIX})",
        ) from err


def upgrade_locked(url: str) -> None:
    """Upgrade a SQLite file to head under an exclusive lock on `<file>.lock`, so auditors that
    start at once on a new file migrate it once (the others wait, then find it at head)."""
    path = sqlite_path(url)
    if path is None:
        upgrade(url)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if current(url) != head():
            upgrade(url)
