"""The human-readable summary of an audit printed by `auditor audit` and `auditor demo`.

It stays readable in an 80-column terminal on layers of hundreds of channels: channel lists
show their first `SHOWN_CHANNELS` (most relevant first) and say how many more the report holds;
the findings table names the channels each finding is about."""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table

from auditor.config import AuditConfig
from auditor.redaction import redact
from auditor.results import AuditOutcome, ConditionMetrics, Finding

SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan"}
#: channels listed in the summary per list; the report and the HTML report hold them all
SHOWN_CHANNELS = 8
CLASS_CHANNELS = 4  # per row of the per-class table


def channel_list(channels: list[int], shown: int = SHOWN_CHANNELS, labels: list[str] | None = None) -> str:
    """The first `shown` channels (with their `labels`, if given), comma-separated, then how
    many more there are."""
    text = ", ".join(
        str(c) if labels is None else f"{c} ({label})" for c, label in zip(channels[:shown], labels or channels)
    )
    hidden = len(channels) - shown
    return f"{text} +{hidden} more" if hidden > 0 else text


def _finding_channels(finding: Finding) -> str:
    channels = getattr(finding.evidence, "channels", None)
    return channel_list(list(channels), CLASS_CHANNELS) if channels else ""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _row(name: str, m: ConditionMetrics | dict) -> list[str]:
    get = m.get if isinstance(m, dict) else lambda key: getattr(m, key)
    return [
        name,
        _pct(get("accuracy")),
        _pct(get("average_precision")),
        _pct(get("flip_rate")),
        f"{get('logit_drop'):.3f}",
        _pct(get("margin_drop")),
    ]


def print_summary(console: Console, outcome: AuditOutcome, config: AuditConfig) -> None:
    r = outcome.result
    version = f" version {r.model.version}" if r.model.version else ""
    console.print(
        f"\n[bold]Audit {outcome.audit_id}[/] of [bold]{r.model.name}[/]{version} "
        f"({r.model.uri}) at layer [bold]{r.channels.layer}[/]: {r.n_samples} samples, "
        f"{r.n_labelled} labelled, {r.timings.get('total', 0):.1f} s"
    )
    top, relevance = r.channels.top_k, r.channels.relevance
    more = " (all in the report)" if len(top) > SHOWN_CHANNELS else ""
    console.print(
        f"top-{r.channels.k} of {len(relevance)} channels ({r.channels.method}, relevance): "
        f"{channel_list(top, labels=[f'{relevance[c]:.3f}' for c in top])}{more}"
    )

    dropout = Table(title=f"Channel dropout (k = {r.dropout.k})", title_justify="left")
    for column in ("condition", "accuracy", "AP", "flip rate", "logit drop", "margin lost"):
        dropout.add_column(column, justify="left" if column == "condition" else "right")
    d = r.dropout
    dropout.add_row(*_row("none (baseline)", d.baseline))
    dropout.add_row(*_row("top-k", d.top_k))
    dropout.add_row(*_row(f"random-k (mean of {len(d.random_k)})", d.random_k_mean))
    dropout.add_row(*_row("bottom-k", d.bottom_k))
    console.print(dropout)

    if r.classes:
        per_class = Table(title="Per predicted class (top-k of each class)", title_justify="left")
        for column in ("class", "samples", "top-k", "margin lost: top-k", "random-k", "bottom-k",
                       *(f"{s.probe}: act. drop top/random" for s in r.classes[0].probe_shifts)):
            per_class.add_column(column, justify="left" if column in ("class", "top-k") else "right")
        for c in r.classes:
            per_class.add_row(
                c.class_name, str(c.n_samples), channel_list(c.top_k, CLASS_CHANNELS),
                _pct(c.dropout.top_k.margin_drop),
                _pct(c.dropout.random_k_mean["margin_drop"]), _pct(c.dropout.bottom_k.margin_drop),
                *(f"{_pct(s.top_k_activation_drop)} / {_pct(s.top_k_activation_drop - s.collapse)}"
                  for s in c.probe_shifts),
            )
        console.print(per_class)

    probes = Table(title="Probes", title_justify="left")
    for column in ("probe", "accuracy", "flip rate", "neutral flip", "top-k act. drop", "random act. drop"):
        probes.add_column(column, justify="left" if column == "probe" else "right")
    for p in r.probes:
        random_drop = sum(p.random_k_activation_drops) / len(p.random_k_activation_drops)
        probes.add_row(
            p.name, _pct(p.probed.accuracy), _pct(p.probed.flip_rate), _pct(p.neutral.flip_rate),
            _pct(p.top_k_activation_drop), _pct(random_drop),
        )
    console.print(probes)

    if r.findings:
        findings = Table(title="Findings", title_justify="left")
        for column in ("severity", "kind", "finding"):
            findings.add_column(column)
        for f in r.findings:
            style = SEVERITY_STYLE[f.severity]
            channels = _finding_channels(f)
            findings.add_row(
                f"[{style}]{f.severity}[/]", f.kind + (f"\n({f.probe})" if f.probe else ""),
                f.title + (f"\n[bold]channels[/]: {channels}" if channels else ""),
            )
        console.print(findings)
    else:
        console.print("[green]No findings[/] at the configured thresholds.")

    drift = outcome.drift
    if drift is not None and drift.baseline_audit_id is not None:
        stats = ", ".join(
            f"{d.name} {d.value:.3f}{' [red](drift)[/]' if d.drifted else ''}" for d in drift.statistics
        )
        console.print(f"explanation drift vs audit {drift.baseline_audit_id}: {stats}")
    elif drift is not None and drift.note:
        console.print(f"explanation drift: {drift.note}")

    console.print(f"stored in: {redact(config.store_url)} (audit {outcome.audit_id})")
    if outcome.report_path:
        console.print(f"report:    {outcome.report_path}")
    console.print(f"review it: {dashboard_command(config.store_url)}")


def dashboard_command(store_url: str) -> str:
    """The command that opens the dashboard on `store_url`, quoting no password: without `--db`
    when the URL is `AUDITOR_DB_URL` (the dashboard reads it too)."""
    if store_url == os.environ.get("AUDITOR_DB_URL"):
        return "auditor dashboard"
    return f"auditor dashboard --db {redact(store_url)}"
