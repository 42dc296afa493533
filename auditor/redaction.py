"""Redaction: the one function that masks secrets in any text the auditor stores, logs, prints
or sends (database and tracking URLs, configs, error messages, alert payloads).

`redact` masks

* the password of every URL, `scheme://user:password@host` -> `scheme://user:***@host`
  (SQLAlchemy's `render_as_string(hide_password=True)` form, for any scheme);
* the value of credential query parameters (`?password=...`, `token`, `secret`, `api_key`, ...);
* every secret value resolved from the environment while the process runs (`register_secret`:
  the webhook URLs and SMTP passwords named by the alert sinks' `*_env` fields). The names of
  those variables are not secret and stay.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter registered values are not searched for: they would mask ordinary words."""

_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)(?P<password>[^\s/'\"]+)(?=@)"
)
_CREDENTIAL_PARAMETER = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|pass|secret|token|api_key|apikey|access_token|key)=)"
    r"(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Mask `value` in everything `redact` sees from now on (a secret read from the
    environment)."""
    if len(value) >= MIN_SECRET_LENGTH:
        _secrets.add(value)


def redact(text: str) -> str:
    """`text` with URL passwords, credential query parameters and registered secrets masked."""
    for value in sorted(_secrets, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    return _CREDENTIAL_PARAMETER.sub(lambda m: m["head"] + MASK, text)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line passes through `redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))

