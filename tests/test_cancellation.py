"""`auditor.audit.cancellation`: SIGTERM turned into a cancel request inside the audit block (and
only there), and what a cancellation becomes for the user. The whole path through the CLI, a
real subprocess sent SIGTERM / SIGINT, is in tests/test_cli.py; the scheduler's shutdown in
tests/test_scheduler.py."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from auditor.audit.cancellation import (
    INTERRUPTED,
    TERMINATED,
    AuditCancelled,
    CancelRequest,
    cancellation,
    sigterm_cancels,
)
from auditor.errors import AuditorError


def deliver_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler runs in this thread, interrupting the sleep


@pytest.fixture
def default_sigterm():
    """SIGTERM at its default action (as in `auditor audit`), whatever the test runner set."""
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, before)


def test_sigterm_raises_a_cancel_request_once_then_the_default_is_back(default_sigterm):
    with sigterm_cancels():
        with pytest.raises(CancelRequest) as caught:
            deliver_sigterm()
        os.kill(os.getpid(), signal.SIGTERM)  # a second one, while unwinding: ignored
        time.sleep(0.2)
    assert (caught.value.signum, str(caught.value)) == (signal.SIGTERM, TERMINATED)
    assert not isinstance(caught.value, Exception)  # no `except Exception` can swallow it
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_handler_of_the_caller_is_kept(default_sigterm):
    received = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    with sigterm_cancels():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
    assert received == [signal.SIGTERM]


def test_outside_the_main_thread_nothing_is_installed(default_sigterm):
    seen = []

    def worker() -> None:
        with sigterm_cancels():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [signal.SIG_DFL]


def test_what_a_cancellation_becomes():
    by_ctrl_c = cancellation(KeyboardInterrupt(), 7)
    assert isinstance(by_ctrl_c, AuditCancelled) and isinstance(by_ctrl_c, AuditorError)
    assert (by_ctrl_c.audit_id, by_ctrl_c.exit_code, by_ctrl_c.reason) == (7, 130, INTERRUPTED)
    assert str(by_ctrl_c) == "audit 7 cancelled (SIGINT): stored as cancelled, without results"

    by_sigterm = cancellation(CancelRequest("the scheduler shut down"), 8)
    assert by_sigterm is not None
    assert (by_sigterm.exit_code, by_sigterm.reason) == (143, "the scheduler shut down")
    assert str(by_sigterm).startswith("audit 8 cancelled (SIGTERM)")

    assert cancellation(ValueError("a failure"), 9) is None
    assert cancellation(SystemExit(1), 9) is None
