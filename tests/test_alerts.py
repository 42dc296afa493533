"""Alerts against real sinks on loopback: an HTTP server (JSON and Slack-compatible webhooks),
an aiosmtpd SMTP server with AUTH, and the log; every alert stored in a real database."""

from __future__ import annotations

import importlib
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from auditor.alerts import sinks as sinks_module
from auditor.alerts.dispatch import dispatch
from auditor.alerts.rules import finding_alerts
from auditor.audit.post_audit import after_audit, on_audit_failed
from auditor.config import AuditConfig, load_config
from auditor.errors import ConfigError
from auditor.results import AuditResult, Finding
from auditor.store import AlertRow, AuditStore
from auditor.store.schema import utcnow

from . import test_store
from .evidence_examples import example_evidence
from .plugins import fresh_registry, install_plugin
from .test_store import make_result, start

sqlite_url, postgresql_url = test_store.sqlite_url, test_store.postgresql_url
db_url, store = test_store.db_url, test_store.store

WEBHOOK_TOKEN = "T0KEN-hooks-s3cret"
SMTP_PASSWORD = "smtp-pa55-s3cret"
HIGH_TITLE = "top-3 channels at layer4 carry the decision"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Webhook:
    """A local HTTP server that records every POST; `status` is what it answers."""

    base: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200

    def url(self, name: str) -> str:
        return f"{self.base}/{name}/{WEBHOOK_TOKEN}"

    def bodies(self, name: str) -> list[dict[str, Any]]:
        return [p["body"] for p in self.posts if p["path"].startswith(f"/{name}/")]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.posts.append(
                {
                    "path": self.path,
                    "content_type": self.headers["Content-Type"],
                    "body": json.loads(body),
                }
            )
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.base = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Inbox:
    """An aiosmtpd handler keeping every accepted message."""

    messages: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, _server: object, _session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"


def _authenticate(
    _server: object, _session: Session, _envelope: Envelope, _mechanism: str, data: object
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        b"auditor",
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on loopback with AUTH LOGIN/PLAIN over plain text (no TLS)."""
    inbox = Inbox()
    port = _free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch, webhook: Webhook) -> None:
    monkeypatch.setenv("AUDITOR_TEST_WEBHOOK", webhook.url("json"))
    monkeypatch.setenv("AUDITOR_TEST_SLACK", webhook.url("slack"))
    monkeypatch.setenv("AUDITOR_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.delenv("AUDITOR_TEST_UNSET", raising=False)


def sinks(smtp_port: int = 1, security: str = "none") -> list[dict[str, Any]]:
    return [
        {"name": "log", "type": "log"},
        {"name": "json", "type": "webhook", "url_env": "AUDITOR_TEST_WEBHOOK", "timeout_s": 5},
        {"name": "chat", "type": "slack", "url_env": "AUDITOR_TEST_SLACK", "timeout_s": 5},
        {
            "name": "mail",
            "type": "smtp",
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": security,
            "username": "auditor",
            "password_env": "AUDITOR_TEST_SMTP_PASSWORD",
            "sender": "auditor@example.org",
            "recipients": ["oncall@example.org", "ml-team@example.org"],
            "timeout_s": 5,
        },
    ]


def config_base() -> dict[str, Any]:
    return {
        "model": {"uri": "models:/skin-lesion-cnn@champion"},
        "samples": [{"name": "production", "uri": "/data/production"}],
    }


def config(
    rules: list[dict[str, Any]], sink_list: list[dict[str, Any]] | None = None, **alerts: Any
) -> AuditConfig:
    return AuditConfig.model_validate(
        {**config_base(), "alerts": {"sinks": sink_list or sinks(), "rules": rules, **alerts}}
    )


def stored_audit(store: AuditStore, result: AuditResult | None = None) -> int:
    audit_id = start(store)
    store.finish_audit(audit_id, result or make_result())
    return audit_id


def outcomes(alerts: list[AlertRow]) -> list[tuple[str, str, str, str | None]]:
    return [(a.sink, a.event, a.status, a.error) for a in alerts]


def assert_no_secret(store: AuditStore, audit_id: int, caplog: pytest.LogCaptureFixture) -> None:
    stored = json.dumps([[a.payload, a.error, a.title] for a in store.alerts(audit_id)])
    for secret in (WEBHOOK_TOKEN, SMTP_PASSWORD):
        assert secret not in stored
        assert secret not in caplog.text


@pytest.mark.usefixtures("secrets")
def test_rules_send_findings_to_every_sink(
    store: AuditStore,
    webhook: Webhook,
    smtp: tuple[Inbox, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox, port = smtp
    cfg = config(
        [
            {"event": "finding", "min_severity": "high", "sinks": ["log", "json", "chat", "mail"]},
            {"event": "finding", "min_severity": "medium", "sinks": ["json"]},
        ],
        sinks(port),
    )
    audit_id = stored_audit(store)
    with caplog.at_level(logging.WARNING, logger="auditor.alerts"):
        alerts = after_audit(store, audit_id, cfg)

    assert [(a.sink, a.severity, a.status, a.error) for a in alerts] == [
        ("log", "high", "sent", None),
        ("json", "high", "sent", None),
        ("chat", "high", "sent", None),
        ("mail", "high", "sent", None),
        ("json", "medium", "sent", None),  # the second rule; json had the high one already
    ]
    assert [a.id for a in store.alerts(audit_id)] == [a.id for a in alerts]
    high, medium = store.findings(audit_id)

    body = webhook.bodies("json")[0]
    assert {p["content_type"] for p in webhook.posts} == {"application/json"}
    assert (body["event"], body["severity"], body["title"]) == ("finding", "high", HIGH_TITLE)
    assert (body["audit_id"], body["finding_id"]) == (audit_id, high.id)
    assert body["fingerprint"] == high.fingerprint
    assert body["evidence"]["kind"] == "spurious_channels"
    assert body["evidence"]["channels"] == [15, 11, 3]
    assert body["model"] == "skin-lesion-cnn version 3 (models:/skin-lesion-cnn@champion)"
    assert webhook.bodies("json")[1]["finding_id"] == medium.id
    assert webhook.bodies("slack") == [
        {
            "text": f"*[high] {HIGH_TITLE}*\nskin-lesion-cnn version 3 "
            f"(models:/skin-lesion-cnn@champion), audit {audit_id} (finding)"
        }
    ]

    (envelope,) = inbox.messages
    assert envelope.mail_from == "auditor@example.org"
    assert envelope.rcpt_tos == ["oncall@example.org", "ml-team@example.org"]
    mail = message_from_bytes(envelope.content, policy=policy.default)
    assert mail["Subject"] == f"[auditor] high: {HIGH_TITLE}"
    assert f"fingerprint: {high.fingerprint}" in mail.get_content()

    model = "skin-lesion-cnn version 3 (models:/skin-lesion-cnn@champion)"
    assert [r.message for r in caplog.records if r.name == "auditor.alerts"] == [
        f"[high] {HIGH_TITLE}\n{model}, audit {audit_id} (finding)"
    ]
    assert_no_secret(store, audit_id, caplog)


@pytest.mark.usefixtures("secrets")
def test_the_same_finding_is_sent_once_per_cooldown(store: AuditStore, webhook: Webhook) -> None:
    cfg = config(
        [{"event": "finding", "min_severity": "high", "new_only": False, "sinks": ["json"]}],
        cooldown_s=3600,
    )
    first, second = stored_audit(store), stored_audit(store)
    assert outcomes(after_audit(store, first, cfg)) == [("json", "finding", "sent", None)]
    assert outcomes(after_audit(store, second, cfg)) == [
        ("json", "finding", "suppressed", "already sent to 'json' within the cooldown of 3600 s")
    ]
    assert len(webhook.posts) == 1

    # a rule's own cooldown overrides alerts.cooldown_s
    short = config(
        [{"event": "finding", "new_only": False, "cooldown_s": 0, "sinks": ["json"]}],
        cooldown_s=3600,
    )
    assert outcomes(after_audit(store, second, short)) == [("json", "finding", "sent", None)]

    fired = finding_alerts(store, second, cfg.alerts)
    later = dispatch(store, fired, cfg.alerts, now=utcnow() + timedelta(hours=1, seconds=1))
    assert outcomes(later) == [("json", "finding", "sent", None)]
    assert [b["audit_id"] for b in webhook.bodies("json")] == [first, second, second]


@pytest.mark.usefixtures("secrets")
def test_only_new_findings_alert_by_default(store: AuditStore, webhook: Webhook) -> None:
    cfg = config([{"event": "finding", "min_severity": "medium", "sinks": ["json"]}])
    first = stored_audit(store)
    assert len(after_audit(store, first, cfg)) == 2
    repeated = stored_audit(store)  # the same findings again: recognised by fingerprint
    assert after_audit(store, repeated, cfg) == []
    # new fingerprints: other channels of the spurious finding, another probe's sensitivity
    # (a probe_sensitivity finding names no channels)
    moved_result = make_result(finding_channels=[1, 2, 4])
    moved_result.findings[1] = replace(moved_result.findings[1], probe="blur")
    moved = stored_audit(store, moved_result)
    assert len(after_audit(store, moved, cfg)) == 2
    spurious, probe = webhook.bodies("json")[2:]
    assert spurious["evidence"]["channels"] == [1, 2, 4]
    assert probe["evidence"]["probe"] == "blur"


@pytest.mark.usefixtures("secrets")
def test_drift_and_failed_audits_alert(store: AuditStore, webhook: Webhook) -> None:
    cfg = config(
        [
            {"event": "drift", "min_severity": "medium", "sinks": ["json"]},
            {"event": "finding", "min_severity": "low", "sinks": ["chat"]},
            {"event": "audit_failed", "sinks": ["json", "chat"]},
        ]
    )
    drift = Finding(
        kind="explanation_drift",
        severity="medium",
        title="Jensen-Shannon distance of channel relevance against audit 1 is 0.44",
        evidence=example_evidence("explanation_drift", value=0.44),
    )
    audit_id = stored_audit(store, replace(make_result(), findings=[drift]))
    assert outcomes(after_audit(store, audit_id, cfg)) == [("json", "drift", "sent", None)]
    assert webhook.bodies("json")[0]["evidence"]["statistic"] == "js_distance"

    failed = start(store)
    error = "samples of size 32x32x3 do not fit model m -- fix: set preprocess.size"
    store.fail_audit(failed, error)
    alerts = on_audit_failed(store, failed, error, cfg)
    assert outcomes(alerts) == [
        ("json", "audit_failed", "sent", None),
        ("chat", "audit_failed", "sent", None),
    ]
    body = webhook.bodies("json")[1]
    assert (body["severity"], body["title"]) == ("high", f"audit {failed} failed: {error}")
    assert body["evidence"]["error"] == error
    assert body["model"] == "models:/skin-lesion-cnn@champion"
    # the same failure again within the cooldown is stored, not sent
    again = start(store)
    store.fail_audit(again, error)
    assert [a.status for a in on_audit_failed(store, again, error, cfg)] == ["suppressed"] * 2


@pytest.mark.usefixtures("secrets")
def test_delivery_failures_are_stored_logged_and_retried(
    store: AuditStore,
    webhook: Webhook,
    smtp: tuple[Inbox, int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox, port = smtp
    closed = _free_port()
    monkeypatch.setenv("AUDITOR_TEST_SLACK", f"http://127.0.0.1:{closed}/slack/{WEBHOOK_TOKEN}")
    sink_list = [
        *sinks(port, security="starttls"),  # this server offers no STARTTLS
        {"name": "unset", "type": "webhook", "url_env": "AUDITOR_TEST_UNSET"},
        {"name": "ftp", "type": "webhook", "url_env": "AUDITOR_TEST_FTP"},
    ]
    monkeypatch.setenv("AUDITOR_TEST_FTP", f"ftp://files.example.org/{WEBHOOK_TOKEN}")
    cfg = config(
        [
            {
                "event": "finding",
                "min_severity": "high",
                "sinks": ["json", "chat", "mail", "unset", "ftp"],
            }
        ],
        sink_list,
    )
    webhook.status = 500
    audit_id = stored_audit(store)
    with caplog.at_level(logging.WARNING, logger="auditor.alerts"):
        alerts = after_audit(store, audit_id, cfg)

    assert [(a.sink, a.status) for a in alerts] == [
        ("json", "failed"),
        ("chat", "failed"),
        ("mail", "failed"),
        ("unset", "failed"),
        ("ftp", "failed"),
    ]
    errors = {a.sink: a.error for a in alerts}
    assert errors["ftp"] == (
        "alert sink 'ftp': AUDITOR_TEST_FTP does not hold a valid http(s) URL -- fix: set "
        "AUDITOR_TEST_FTP to the webhook's http:// or https:// URL"
    )
    assert errors["json"] == (
        "alert sink 'json': the webhook answered HTTP 500 -- fix: check the URL in "
        "AUDITOR_TEST_WEBHOOK and the webhook's configuration"
    )
    assert errors["chat"].startswith("alert sink 'chat': POST to the webhook failed: ")
    assert "Connection refused" in errors["chat"]
    assert errors["mail"].startswith(
        f"alert sink 'mail': sending mail via 127.0.0.1:{port} failed: STARTTLS"
    )
    assert errors["unset"] == (
        "alert sink 'unset': environment variable AUDITOR_TEST_UNSET is not set -- fix: set "
        "AUDITOR_TEST_UNSET to the webhook URL in the auditor's environment"
    )
    assert all("\n" not in e for e in errors.values())
    logged = [r.getMessage() for r in caplog.records if r.name == "auditor.alerts"]
    assert [m for m in logged if "HTTP 500" in m] == [
        f"alert for audit {audit_id} not delivered: {errors['json']}"
    ]
    assert len(webhook.posts) == 1 and inbox.messages == []
    assert_no_secret(store, audit_id, caplog)

    # a failed delivery gives its cooldown claim back: the next audit's alert goes out
    webhook.status = 204
    repeat = config(
        [{"event": "finding", "min_severity": "high", "new_only": False, "sinks": ["json"]}]
    )
    assert outcomes(after_audit(store, stored_audit(store), repeat)) == [
        ("json", "finding", "sent", None)
    ]


@pytest.mark.usefixtures("secrets")
def test_false_alarm_reviews_silence_alerts(store: AuditStore, webhook: Webhook) -> None:
    cfg = config(
        [{"event": "finding", "min_severity": "medium", "new_only": False, "sinks": ["json"]}]
    )
    first = stored_audit(store)
    high, _medium = store.findings(first)
    store.add_review(high.id, "false_alarm", "dr. lee", "the tint is the label in this domain")
    second = stored_audit(store)
    assert outcomes(after_audit(store, second, cfg)) == [
        ("json", "finding", "suppressed", "the finding was reviewed as a false alarm"),
        ("json", "finding", "sent", None),
    ]
    assert [b["severity"] for b in webhook.bodies("json")] == ["medium"]


def test_config_names_secrets_never_holds_them(tmp_path: Path) -> None:
    path = tmp_path / "audit.yaml"
    base = "model: {uri: m}\nsamples: [{name: p, uri: p}]\n"
    path.write_text(
        base
        + "alerts:\n  sinks: [{name: hook, type: slack, url_env: 'https://hooks.example/T0'}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"config file {path}: alerts.sinks.0.slack.url_env: Value error, must be the name of an "
        "environment variable that holds the secret, never the secret itself -- fix: see the "
        "config format in README.md"
    )
    path.write_text(base + "alerts:\n  sinks: [{name: hook, type: webhook, url: 'https://x'}]\n")
    with pytest.raises(ConfigError, match="alerts.sinks.0.webhook.url_env: Field required"):
        load_config(path)
    path.write_text(base + "alerts:\n  rules: [{event: drift, sinks: [pager]}]\n")
    with pytest.raises(ConfigError, match=r"alert rule names unknown sinks \['pager'\]"):
        load_config(path)
    path.write_text(base)
    assert load_config(path).alerts.rules == []  # no alerts unless configured


@pytest.mark.usefixtures("secrets")
def test_an_internal_error_is_mailed_on_one_subject_line(
    store: AuditStore, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    cfg = config([{"event": "audit_failed", "sinks": ["mail"]}], sinks(port))
    failed = start(store)
    error = "RuntimeError: CUDA out of memory.\nTried to allocate 2.00 GiB"
    store.fail_audit(failed, error)
    assert outcomes(on_audit_failed(store, failed, error, cfg)) == [
        ("mail", "audit_failed", "sent", None)
    ]
    mail = message_from_bytes(inbox.messages[0].content, policy=policy.default)
    assert mail["Subject"] == (
        f"[auditor] high: audit {failed} failed: RuntimeError: CUDA out of memory. "
        "Tried to allocate 2.00 GiB"
    )
    assert json.dumps(error) in mail.get_content()  # the evidence keeps the error as it was


def test_a_plugin_sink_is_configured_and_receives_dispatched_alerts(
    store: AuditStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution declaring a sink type in `relevance_auditor.alert_sinks` brings its
    settings model (validated like a built-in's, secrets by variable name) and its sender."""
    fresh_registry(monkeypatch, sinks_module, "ALERT_SINKS", sinks_module.check_sink_type)
    install_plugin(
        tmp_path,
        monkeypatch,
        "team_sinks",
        """
        from typing import Literal

        from auditor.alerts.sinks import EnvName, SinkSettings, SinkType, secret

        RECEIVED = []

        class PagerSettings(SinkSettings):
            type: Literal["pager"]
            service: str
            token_env: EnvName

        def page(sink, alert):
            RECEIVED.append((sink.service, alert.severity, alert.title, secret(sink, sink.token_env, "a token")))

        PAGER = SinkType(settings=PagerSettings, send=page)
        """,
        {"relevance_auditor.alert_sinks": {"pager": "team_sinks:PAGER"}},
    )
    monkeypatch.setenv("AUDITOR_TEST_PAGER_TOKEN", "pager-t0ken")
    pager = {"name": "oncall", "type": "pager", "service": "audits"}
    rules = [{"event": "finding", "min_severity": "high", "sinks": ["oncall"]}]
    cfg = config(rules, [{**pager, "token_env": "AUDITOR_TEST_PAGER_TOKEN"}])
    assert type(cfg.alerts.sinks[0]).__name__ == "PagerSettings"
    assert AuditConfig.model_validate(yaml.safe_load(cfg.to_yaml())) == cfg

    audit_id = stored_audit(store)
    sent = dispatch(store, finding_alerts(store, audit_id, cfg.alerts), cfg.alerts)
    assert outcomes(sent) == [("oncall", "finding", "sent", None)]
    assert importlib.import_module("team_sinks").RECEIVED == [
        ("audits", "high", HIGH_TITLE, "pager-t0ken")
    ]

    path = tmp_path / "audit.yaml"
    for entry, message in [
        (
            {**pager, "token_env": "https://pager.example/t0"},
            (
                "alerts.sinks.0.pager.token_env: Value error, must be the name of an environment "
                "variable that holds the secret"
            ),
        ),
        (pager, "alerts.sinks.0.pager.token_env: Field required"),
        (
            {**pager, "type": "fax"},
            (
                "alerts.sinks.0: Value error, unknown alert sink 'fax'; known: log, pager, slack, "
                "smtp, webhook"
            ),
        ),
    ]:
        path.write_text(yaml.safe_dump({**config_base(), "alerts": {"sinks": [entry]}}))
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(path)
