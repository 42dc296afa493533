"""Is a running audit still alive? Its owning process (host + pid) and its heartbeat tell.

`AuditStore.start_audit` records `owner_host`, `owner_pid` and `heartbeat_at`; while the
audit runs, `Heartbeat` refreshes `heartbeat_at` every `interval_s` from a daemon thread.
Any auditor judges a running audit stale (`AuditStore.mark_stale_running_as_failed`) when

* its heartbeat (its start, for audits without one) is older than `stale_after_s`: the only
  test that works across hosts, and the one that catches hung processes and reused pids; or
* it was started on this host and its process is gone (no such pid, or a zombie), or it is
  this very process and the audit is not one it is still running.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from auditor.errors import StoreError

log = logging.getLogger(__name__)

HOST = socket.gethostname()

_running: set[int] = set()
_running_lock = threading.Lock()


def register(audit_id: int) -> None:
    """Note that this process runs `audit_id` (from its start until it is finished, failed or
    cancelled)."""
    with _running_lock:
        _running.add(audit_id)


def unregister(audit_id: int) -> None:
    with _running_lock:
        _running.discard(audit_id)


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host exists and is not a zombie (Linux `/proc` state Z/X:
    it died and waits only to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def owner_gone(audit_id: int, host: str | None, pid: int | None) -> bool:
    """True when the audit's owner is known to have ended: same host, and its process is gone
    or is this process without the audit among the ones it runs. Other hosts: never (only the
    heartbeat tells)."""
    if host != HOST or pid is None:
        return False
    if pid == os.getpid():
        with _running_lock:
            return audit_id not in _running
    return not process_alive(pid)


class Heartbeat:
    """Calls `beat()` every `interval_s` seconds in a daemon thread until the block ends.

    `beat` returns False once the audit is no longer running (finished, or failed by another
    auditor), which stops the thread; a database error is logged and retried next interval."""

    def __init__(self, beat: Callable[[], bool], interval_s: float, name: str):
        self._beat = beat
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                if not self._beat():
                    return
            except StoreError as err:  # a transient database failure must not end the audit
                log.warning("%s: heartbeat failed: %s", self._thread.name, err)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
