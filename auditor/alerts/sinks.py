"""Alert sinks: the `ALERT_SINKS` registry of sink types -- each the settings model of its
config entry and the sender that delivers an alert -- and the built-ins: the log, a JSON
webhook, a Slack-compatible webhook, SMTP e-mail. A plug-in sink type registers by entry point
in the group `relevance_auditor.alert_sinks` (README, "Extending the auditor").

Secrets (webhook URLs, SMTP passwords) are read from the environment variables the config
names, at delivery time, and never appear in error messages or stored alerts. Every delivery
failure becomes one `AlertDeliveryError` line naming the sink and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    ValidationError,
)
from pydantic_core import InitErrorDetails

from auditor.errors import AuditorError
from auditor.redaction import register_secret
from auditor.registry import Registry

if TYPE_CHECKING:
    from auditor.alerts.rules import Alert

log = logging.getLogger("auditor.alerts")


class AlertDeliveryError(AuditorError):
    """An alert could not be delivered to a sink."""


def _env_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(
            "must be the name of an environment variable that holds the secret, "
            "never the secret itself"
        )
    return name


EnvName = Annotated[str, AfterValidator(_env_name)]


class SinkSettings(BaseModel):
    """The config entry of one sink: its `name` (rules send to it by name), its `type` (a
    registered sink type) and the fields of that type."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    type: str


class LogSink(SinkSettings):
    """Alerts as WARNING records of the `auditor.alerts` logger."""

    type: Literal["log"]


class WebhookSink(SinkSettings):
    """Alerts POSTed as JSON (`webhook`) or as a Slack-compatible `{"text": ...}` (`slack`)
    to the URL held by the environment variable `url_env`."""

    type: Literal["webhook", "slack"]
    url_env: EnvName
    timeout_s: float = Field(default=10, gt=0)


class SmtpSink(SinkSettings):
    """Alerts as e-mail; the password comes from the environment variable `password_env`."""

    type: Literal["smtp"]
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password_env: EnvName | None = None
    sender: str
    recipients: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=10, gt=0)


@dataclass(frozen=True)
class SinkType:
    """A kind of sink: the model validating its config entries, and `send(settings, alert)`,
    which delivers one alert or raises `AlertDeliveryError`."""

    settings: type[SinkSettings]
    send: Callable[[Any, Alert], None]


def check_sink_type(name: str, kind: SinkType) -> None:
    """The `ALERT_SINKS` validity check: a `SinkType` whose settings model is a `SinkSettings`."""
    if not isinstance(kind, SinkType):
        raise TypeError(f"alert sink '{name}': {kind!r} is not a SinkType")
    if not (isinstance(kind.settings, type) and issubclass(kind.settings, SinkSettings)):
        raise TypeError(f"alert sink '{name}': settings {kind.settings!r} is not a SinkSettings")
    if not callable(kind.send):
        raise TypeError(f"alert sink '{name}': send {kind.send!r} is not callable")


ALERT_SINKS: Registry[SinkType] = Registry(
    "alert sink", "relevance_auditor.alert_sinks", check_sink_type
)


def sink_settings(entry: Any) -> SinkSettings:
    """A config entry validated by the settings model of its `type`; errors are located under
    the type, as for a tagged union (`alerts.sinks.0.slack.url_env`)."""
    if isinstance(entry, SinkSettings):
        return entry
    if not isinstance(entry, dict) or "type" not in entry:
        raise ValueError(f"a sink needs a 'type', one of: {', '.join(ALERT_SINKS.names())}")
    settings = ALERT_SINKS.get(entry["type"]).settings
    try:
        return settings.model_validate(entry)
    except ValidationError as err:
        raise ValidationError.from_exception_data(
            err.title,
            [
                InitErrorDetails(
                    type=e["type"],
                    loc=(entry["type"], *e["loc"]),
                    input=e["input"],
                    ctx=e.get("ctx", {}),
                )
                for e in err.errors()
            ],
        ) from None


#: a sink's config entry, validated by the settings model its `type` registered
AlertSink = Annotated[SerializeAsAny[SinkSettings], PlainValidator(sink_settings)]


def deliver(sink: SinkSettings, alert: Alert) -> None:
    """Send `alert` to `sink`; raises `AlertDeliveryError` when it does not arrive."""
    ALERT_SINKS.get(sink.type).send(sink, alert)


def send_log(sink: LogSink, alert: Alert) -> None:
    """A WARNING record of the `auditor.alerts` logger."""
    log.warning("%s", alert.text())


def send_webhook(sink: WebhookSink, alert: Alert) -> None:
    """The alert's JSON payload, POSTed to the URL in `url_env`."""
    post_json(sink, secret(sink, sink.url_env, "the webhook URL"), alert.payload())


def send_slack(sink: WebhookSink, alert: Alert) -> None:
    """A Slack-compatible message, POSTed to the URL in `url_env`."""
    post_json(sink, secret(sink, sink.url_env, "the webhook URL"), slack_message(alert))


def secret(sink: SinkSettings, variable: str, what: str) -> str:
    """The value of the environment variable `variable`, which the sink's config names."""
    value = os.environ.get(variable)
    if not value:
        raise AlertDeliveryError(
            f"alert sink {sink.name!r}: environment variable {variable} is not set",
            f"set {variable} to {what} in the auditor's environment",
        )
    register_secret(value)  # masked wherever it might be quoted (errors, logs)
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


ALERT_SINKS.add("log", SinkType(LogSink, send_log))
ALERT_SINKS.add("webhook", SinkType(WebhookSink, send_webhook))
ALERT_SINKS.add("slack", SinkType(WebhookSink, send_slack))
ALERT_SINKS.add("smtp", SinkType(SmtpSink, send_email))
