"""The auditor's own log output: a stderr handler and level on the `auditor` logger, apart from
the root logger, so that no library's logging set-up can silence alerts and warnings.

Importing `mlflow.pytorch` runs `logging.basicConfig(level=ERROR)` (its Lightning autolog
module): through the root logger the log sink's alerts (WARNING records of `auditor.alerts`)
and the other sinks' "not delivered" warnings would be dropped while stored as sent. The
entry points (the CLI, the scheduler and its audit processes, the MLflow evaluator) call
`configure_logging` first; the `auditor.*` records then go to this handler only (they do not
propagate, so they are not printed twice where the root logger has a handler as well).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from auditor.redaction import RedactingFormatter

AUDITOR_LOGGER = "auditor"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: the CLI's format: one line per record, without the time the terminal shows anyway
SHORT_FORMAT = "%(levelname)s %(name)s: %(message)s"


class StderrHandler(logging.StreamHandler):
    """Writes to the `sys.stderr` of the moment (as `logging.lastResort` does), so that a
    redirected or captured stderr receives the records."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: int = logging.WARNING, fmt: str = LOG_FORMAT) -> logging.Logger:
    """Give the `auditor` logger its own stderr handler (replacing one an earlier call set up)
    and `level`, and stop its records from propagating to the root logger. Every line passes
    through `auditor.redaction.redact`."""
    logger = logging.getLogger(AUDITOR_LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, StderrHandler)]:
        logger.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(RedactingFormatter(fmt))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def route_library_logs(names: tuple[str, ...], level: int | None = None) -> None:
    """Send the records of a library's loggers (Ray's, which install console handlers of their
    own at INFO) through the `auditor` logger's handlers instead, at `level` (default: the
    auditor's): their other handlers are removed and they stop propagating. Their file
    handlers (Ray's session logs) stay."""
    auditor = logging.getLogger(AUDITOR_LOGGER)
    for name in names:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        for handler in auditor.handlers:
            logger.addHandler(handler)
        logger.setLevel(auditor.getEffectiveLevel() if level is None else level)
        logger.propagate = False
