"""Log a stored audit to MLflow, so that it is visible beside the model it audited.

One run per audit in the experiment `mlflow_logging.experiment` (default "relevance-audits"):

* metrics: dropout accuracy / AP / flip rate / logit drop per condition (`dropout.top_k.flip_rate`,
  random-k averaged over its repeats), probe metrics and activation drops
  (`probe.grayscale.flip_rate`, `probe.grayscale.neutral.flip_rate`, ...), finding counts
  (`findings.total`, `findings.high`, ...), sample counts;
* artefacts: the JSON report (`report.json`), the HTML report (`findings.html`, see
  `auditor.artefacts.html_report`), the audit config (`audit.yaml`) and the tables
  `dropout.csv`, `probes.csv`, `channels.csv`;
* run tags `auditor.audit_id`, `auditor.model_name`, `auditor.model_version`,
  `auditor.model_uri` (search: `tags."auditor.model_name" = 'counterfeit'`).

For a registry model version the metrics are linked to the version's logged model (MLflow 3
`model_id`; the run lists it as an input), so they show on the model's page, and the version
gets the tags `auditor.last_audit_id`, `auditor.last_audit_run_id`, `auditor.last_audit_status`
and `auditor.last_audit_findings`.

Logging is a side channel: `log_audit` never raises; a failure is logged as a warning naming
the audit and the reason, and the audit (already stored) stands.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mlflow.entities import LoggedModelInput, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from auditor.artefacts.html_report import write_audit_html
from auditor.artefacts.report import build_report
from auditor.config import AuditConfig
from auditor.redaction import redact
from auditor.results import AuditOutcome, ModelRef
from auditor.store import AuditStore
from auditor.tracking.resolve import check_tracking_server

logger = logging.getLogger(__name__)

SEVERITIES = ("high", "medium", "low")
HTML_REPORT = "findings.html"
COUNT_FIELDS = ("n_samples", "n_labelled")  # per condition; logged once as samples.*
LOGGED_MODEL_SOURCE = re.compile(r"models:/(m-[0-9a-f]+)")


def log_audit(outcome: AuditOutcome, config: AuditConfig) -> str | None:
    """Log a stored audit to MLflow when `config.mlflow_logging.enabled`; return the run id,
    or None when disabled or when logging failed (warned, the audit stands)."""
    if not config.mlflow_logging.enabled:
        return None
    try:
        return _log(outcome, config)
    except Exception as err:  # noqa: BLE001 -- a side channel: any failure only warns
        logger.warning(
            "MLflow logging of audit %d to %s failed: %s -- the audit itself is stored",
            outcome.audit_id,
            redact(config.tracking_uri),
            redact(str(err)).strip().splitlines()[0] if str(err).strip() else type(err).__name__,
        )
        return None


def audit_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The numeric results of a report (format of `auditor.artefacts.report`) as flat MLflow metrics."""
    metrics: dict[str, float] = {
        "samples.n": report["samples"]["n"],
        "samples.n_labelled": report["samples"]["n_labelled"],
        "channels.k": report["channels"]["k"],
    }
    for condition in ("baseline", "top_k", "random_k", "bottom_k"):
        metrics.update(_prefixed(f"dropout.{condition}", report["dropout"][condition]))
    for name, probe in report["probes"].items():
        metrics.update(_prefixed(f"probe.{name}", probe["probed"]))
        metrics.update(_prefixed(f"probe.{name}.neutral", probe["neutral"]))
        drops = probe["random_k_activation_drops"]
        metrics[f"probe.{name}.top_k_activation_drop"] = probe["top_k_activation_drop"]
        metrics[f"probe.{name}.random_k_activation_drop"] = sum(drops) / len(drops)
    counts = Counter(f["severity"] for f in report["findings"])
    metrics["findings.total"] = len(report["findings"])
    metrics.update({f"findings.{s}": counts[s] for s in SEVERITIES})
    return {key: float(value) for key, value in metrics.items()}


def write_artifacts(
    report: dict[str, Any], config: AuditConfig, folder: Path, *, stored: bool = False
) -> list[Path]:
    """Write the report, the config and the dropout / probe / channel tables into `folder`;
    for an audit `stored` in `config.store_url`, also its HTML report (`findings.html`)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "report.json": json.dumps(report, indent=2),
        "audit.yaml": config.to_yaml(),
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    tables = {
        "dropout.csv": _dropout_rows(report),
        "probes.csv": _probe_rows(report),
        "channels.csv": _channel_rows(report),
    }
    for name, rows in tables.items():
        _write_csv(folder / name, rows)
    written = [folder / name for name in (*files, *tables)]
    if stored:
        store = AuditStore(config.store_url)
        try:
            written.append(write_audit_html(store, report["audit_id"], folder / HTML_REPORT))
        finally:
            store.close()
    return written


def _log(outcome: AuditOutcome, config: AuditConfig) -> str:
    check_tracking_server(config.tracking_uri)
    client = MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)
    model = outcome.result.model
    report = build_report(outcome.audit_id, outcome.result)
    metrics = audit_metrics(report)
    run = client.create_run(
        _experiment_id(client, config.mlflow_logging.experiment),
        tags={
            "auditor.audit_id": str(outcome.audit_id),
            "auditor.model_name": model.name,
            "auditor.model_version": model.version or "",
            "auditor.model_uri": model.uri,
        },
        run_name=f"audit-{outcome.audit_id} {model.name}"
        + (f" v{model.version}" if model.version else ""),
    )
    run_id = run.info.run_id
    try:
        model_id = _logged_model_id(client, model)
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0, model_id=model_id) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in _params(report, config).items()],
        )
        if model_id is not None:
            client.log_inputs(run_id, models=[LoggedModelInput(model_id)])
        with tempfile.TemporaryDirectory(prefix="auditor-mlflow-") as tmp:
            write_artifacts(report, config, Path(tmp), stored=True)
            client.log_artifacts(run_id, tmp)
        if model.version is not None:
            findings = int(metrics["findings.total"])
            _tag_model_version(client, model, outcome.audit_id, run_id, findings)
    except BaseException:
        _terminate(client, run_id, "FAILED")
        raise
    _terminate(client, run_id, "FINISHED")
    return run_id


def _terminate(client: MlflowClient, run_id: str, status: str) -> None:
    """End the run; MLflow then prints "View run ... at: <tracking URI>/..." on stdout, which
    is passed on redacted (a password in the URI's userinfo stays out of the output)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        client.set_terminated(run_id, status)
    sys.stdout.write(redact(printed.getvalue()))


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created meanwhile by a concurrent audit
        return client.get_experiment_by_name(name).experiment_id


def _logged_model_id(client: MlflowClient, model: ModelRef) -> str | None:
    """The MLflow 3 logged model behind a registry version (None for other models)."""
    if model.version is None:
        return None
    version = client.get_model_version(model.name, model.version)
    if version.model_id:
        return version.model_id
    # the REST API leaves model_id empty; the version's source is then models:/<model id>
    match = LOGGED_MODEL_SOURCE.fullmatch(version.source or "")
    return match.group(1) if match else None


def _tag_model_version(
    client: MlflowClient, model: ModelRef, audit_id: int, run_id: str, n_findings: int
) -> None:
    tags = {
        "auditor.last_audit_id": audit_id,
        "auditor.last_audit_run_id": run_id,
        "auditor.last_audit_status": "succeeded",
        "auditor.last_audit_findings": n_findings,
    }
    for key, value in tags.items():
        client.set_model_version_tag(model.name, model.version, key, str(value))


def _params(report: dict[str, Any], config: AuditConfig) -> dict[str, Any]:
    return {
        "model_uri": report["model"]["uri"],
        "model_version": report["model"]["version"] or "",  # the x of MLflow's compare view
        "layer": report["channels"]["layer"],
        "method": report["channels"]["method"],
        "top_k": report["channels"]["k"],
        "random_repeats": len(report["dropout"]["random_k_runs"]),
        "probes": ",".join(config.probes.names),
        "seed": config.seed,
    }


def _prefixed(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    """The defined metrics of one condition (every number but the sample counts)."""
    return {
        f"{prefix}.{name}": value
        for name, value in values.items()
        if name not in COUNT_FIELDS and isinstance(value, int | float) and not isinstance(value, bool)
    }


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV; the columns are the rows' keys in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _dropout_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Baseline, top-k, each random-k repeat with its channels, bottom-k."""
    dropout, channels = report["dropout"], report["channels"]
    runs = [
        ("baseline", 0, [], dropout["baseline"]),
        ("top_k", 0, channels["top_k"], dropout["top_k"]),
        *(("random_k", i, r["channels"], r) for i, r in enumerate(dropout["random_k_runs"])),
        ("bottom_k", 0, channels["bottom_k"], dropout["bottom_k"]),
    ]
    return [
        {"condition": c, "repeat": i, "k": len(s), "channels": " ".join(map(str, s)), **m}
        for c, i, s, m in runs
    ]


def _probe_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, probe in report["probes"].items():
        drops = probe["random_k_activation_drops"]
        shared = {
            "probe": name,
            "perturbation_norm": probe["perturbation_norm"],
            "top_k_activation_drop": probe["top_k_activation_drop"],
            "random_k_activation_drop": sum(drops) / len(drops),
        }
        rows += [{**shared, "variant": v, **probe[v]} for v in ("probed", "neutral")]
    return rows


def _channel_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    channels = report["channels"]
    relevance = channels["relevance"]
    order = sorted(range(len(relevance)), key=lambda c: -relevance[c])
    rank = {c: position + 1 for position, c in enumerate(order)}
    top, bottom = set(channels["top_k"]), set(channels["bottom_k"])
    return [
        {
            "channel": c,
            "relevance": r,
            "rank": rank[c],
            "in_top_k": c in top,
            "in_bottom_k": c in bottom,
        }
        for c, r in enumerate(relevance)
    ]
