"""The store's connection: engine, schema check, transactions (SQLite: BEGIN IMMEDIATE)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from auditor.errors import StoreError
from auditor.redaction import redact
from auditor.store import migrate

WRITE = "auditor_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


class StoreConnection:
    """A connection to the findings database and its transactions; the base of `AuditStore`."""

    def __init__(self, url: str, *, create: bool = True):
        """Connect and check the schema revision. With `create`, a SQLite database is created
        (with its folder) and upgraded when it is behind the migrations; without, it must
        exist (nothing is created) and be at the head revision. Any other database behind the
        migrations raises `StoreError`, as does one that cannot be reached."""
        self.url = url
        path = migrate.sqlite_path(url)
        if not create and path is not None and not path.is_file():
            raise StoreError(
                f"database {redact(url)} does not exist",
                "pass the database the audits were stored in (store_url, AUDITOR_DB_URL or --db)",
            )
        self.engine = migrate.open_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._writes = sessionmaker(
            self.engine, expire_on_commit=False, execution_options={WRITE: True}
        )
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        try:
            with self.engine.connect() as connection:
                revision = MigrationContext.configure(connection).get_current_revision()
        except SQLAlchemyError as err:
            self.engine.dispose()
            raise StoreError(
                f"cannot connect to database {self._display_url}: {migrate.describe(err)}",
                migrate.CONNECT_FIX,
            ) from err
        head = migrate.head()
        if revision == head:
            return
        if create and self.engine.dialect.name == "sqlite":
            migrate.upgrade_locked(url)
            return
        self.engine.dispose()
        raise StoreError(
            f"database {self._display_url} is at schema revision {revision or '(empty)'}, "
            f"this auditor needs {head}",
            "run `auditor db upgrade`",
        )

    @property
    def _display_url(self) -> str:
        return redact(self.url)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any exception;
        database errors become `StoreError`, everything else propagates unchanged. Pass
        `write=False` for transactions that only read."""
        sessions = self._writes if write else self._reads
        try:
            with sessions.begin() as session:
                yield session
        except SQLAlchemyError as err:
            raise StoreError(
                f"database {self._display_url} failed: {migrate.describe(err)}",
                migrate.failure_fix(err),
            ) from err


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Let SQLAlchemy emit BEGIN itself (`_sqlite_begin`) instead of the sqlite3 driver, and
    check foreign keys, which SQLite does only when asked, per connection (not during
    migrations: batch table rebuilds would fire the cascades)."""
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA foreign_keys=ON")


def _sqlite_begin(connection: Connection) -> None:
    """`BEGIN IMMEDIATE` for write transactions: the write lock is taken (or waited for, up
    to the busy timeout) at the start, so a transaction that read first never fails on a
    writer that came in between."""
    immediate = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
