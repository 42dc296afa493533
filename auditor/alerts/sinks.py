"""Alert sinks: the log, a JSON webhook, a Slack-compatible webhook, SMTP e-mail.

Secrets (webhook URLs, SMTP passwords) are read from the environment variables the config
names, at delivery time, and never appear in error messages or stored alerts. Every delivery
failure becomes one `AlertDeliveryError` line naming the sink and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from auditor.alerts.rules import Alert
from auditor.config import AlertSink, LogSink, SmtpSink, WebhookSink
from auditor.errors import AuditorError

log = logging.getLogger("auditor.alerts")


class AlertDeliveryError(AuditorError):
    """An alert could not be delivered to a sink."""


def deliver(sink: AlertSink, alert: Alert) -> None:
    """Send `alert` to `sink`; raises `AlertDeliveryError` when it does not arrive."""
    if isinstance(sink, LogSink):
        log.warning("%s", alert.text())
    elif isinstance(sink, WebhookSink):
        body = alert.payload() if sink.type == "webhook" else slack_message(alert)
        post_json(sink, secret(sink, sink.url_env, "the webhook URL"), body)
    else:
        send_email(sink, alert)


def secret(sink: AlertSink, variable: str, what: str) -> str:
    """The value of the environment variable `variable`, which the sink's config names."""
    value = os.environ.get(variable)
    if not value:
        raise AlertDeliveryError(
            f"alert sink {sink.name!r}: environment variable {variable} is not set",
            f"set {variable} to {what} in the auditor's environment",
        )
    return value


def slack_message(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message (`text` with mrkdwn), also understood by Mattermost,
    Rocket.Chat and Teams' Slack-compatible connectors."""
    return {
        "text": f"*[{alert.severity}] {alert.title}*\n{alert.model}, audit {alert.audit_id}"
        f" ({alert.event})"
    }


def post_json(sink: WebhookSink, url: str, body: dict[str, Any]) -> None:
    """POST `body` as JSON; any status outside 2xx, or no answer in `timeout_s`, fails.
    Messages never quote the URL (a webhook URL is a secret)."""
    try:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("not an http(s) URL")
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=sink.timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except ValueError as err:  # its message would quote the URL
        raise AlertDeliveryError(
            f"alert sink {sink.name!r}: {sink.url_env} does not hold a valid http(s) URL",
            f"set {sink.url_env} to the webhook's http:// or https:// URL",
        ) from err
    except OSError as err:  # URLError, timeouts, refused connections
        reason = getattr(err, "reason", err)
        raise AlertDeliveryError(
            f"alert sink {sink.name!r}: POST to the webhook failed: {reason}",
            "check that the webhook is reachable from the auditor",
        ) from err
    if not 200 <= status < 300:
        raise AlertDeliveryError(
            f"alert sink {sink.name!r}: the webhook answered HTTP {status}",
            f"check the URL in {sink.url_env} and the webhook's configuration",
        )


def email(sink: SmtpSink, alert: Alert) -> EmailMessage:
    """The alert as a plain-text e-mail: subject `[auditor] severity: title`."""
    message = EmailMessage()
    message["Subject"] = f"[auditor] {alert.severity}: {' '.join(alert.title.split())}"
    message["From"] = sink.sender
    message["To"] = ", ".join(sink.recipients)
    message.set_content(
        f"{alert.text()}\n\nfingerprint: {alert.fingerprint}\n\n"
        f"{json.dumps(alert.evidence, indent=2, default=str)}\n"
    )
    return message


def send_email(sink: SmtpSink, alert: Alert) -> None:
    """Deliver by SMTP: implicit TLS (`ssl`), STARTTLS, or plain (`none`, trusted relays
    only); log in when `username` is set, with the password from `password_env`."""
    password = secret(sink, sink.password_env, "the SMTP password") if sink.password_env else None
    context = ssl.create_default_context()
    try:
        if sink.security == "ssl":
            smtp = smtplib.SMTP_SSL(sink.host, sink.port, timeout=sink.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(sink.host, sink.port, timeout=sink.timeout_s)
        with smtp:
            if sink.security == "starttls":
                smtp.starttls(context=context)
            if sink.username is not None:
                smtp.login(sink.username, password or "")
            smtp.send_message(email(sink, alert))
    except OSError as err:  # smtplib.SMTPException included
        reason = " ".join(str(err).split()) or type(err).__name__
        raise AlertDeliveryError(
            f"alert sink {sink.name!r}: sending mail via {sink.host}:{sink.port} failed: {reason}",
            "check host, port, security, username and the password variable of the sink",
        ) from err
