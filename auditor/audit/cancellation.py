"""Cancelling a running audit: Ctrl-C (SIGINT) or SIGTERM stops it, and it is stored as
`cancelled`, not `failed` (a deliberate stop is no failure: no `audit_failed` alert).

SIGINT arrives as Python's `KeyboardInterrupt`. Inside `sigterm_cancels()`, SIGTERM arrives
the same way, as `CancelRequest`: a `BaseException` like `KeyboardInterrupt`, so that no
`except Exception` on the way (torch, MLflow, a plug-in loader, the pipeline's own shape
check) can swallow it or turn it into an input error. `run_audit` records either one with
`AuditStore.cancel_audit` and raises `AuditCancelled` in its place: the one-line message for
the user, with the conventional exit status 128 + the signal number (130 for SIGINT, 143 for
SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from auditor.errors import AuditorError

INTERRUPTED = "cancelled: interrupted (SIGINT, Ctrl-C) before the audit finished"
TERMINATED = "cancelled: terminated (SIGTERM) before the audit finished"


class CancelRequest(BaseException):
    """Raised in the main thread to stop the running audit. `signum` is the signal that asked
    for it; `str(err)` is the reason stored with the cancelled audit."""

    def __init__(self, reason: str, signum: int = signal.SIGTERM):
        self.signum = signum
        super().__init__(reason)


class AuditCancelled(AuditorError):
    """The audit was stopped by a signal and is stored as `cancelled` (with `reason` as its
    error, no results, no files). `exit_code` is 128 + the signal number."""

    def __init__(self, audit_id: int, signum: int, reason: str):
        self.audit_id = audit_id
        self.signum = signum
        self.reason = reason
        self.exit_code = 128 + signum
        super().__init__(
            f"audit {audit_id} cancelled ({signal.Signals(signum).name}): "
            "stored as cancelled, without results"
        )


def cancellation(err: BaseException, audit_id: int) -> AuditCancelled | None:
    """The `AuditCancelled` to raise when `err` stopped audit `audit_id` because of a signal
    (`KeyboardInterrupt`, a `CancelRequest`); None when `err` is a failure."""
    if isinstance(err, CancelRequest):
        return AuditCancelled(audit_id, err.signum, str(err))
    if isinstance(err, KeyboardInterrupt):
        return AuditCancelled(audit_id, signal.SIGINT, INTERRUPTED)
    return None


@contextmanager
def sigterm_cancels() -> Iterator[None]:
    """While the block runs, SIGTERM raises `CancelRequest` in it (the first SIGTERM; later ones
    are ignored, so they cannot break the unwinding); the previous handler is restored after.

    Does nothing outside the main thread (only it can handle signals), or when SIGTERM is not
    at its default action: a program that handles (or ignores) SIGTERM itself, such as the
    scheduler's audit process, keeps its own handler."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    raised = False

    def cancel(_signum: int, _frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise CancelRequest(TERMINATED, signal.SIGTERM)

    signal.signal(signal.SIGTERM, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
