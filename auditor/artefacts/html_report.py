"""One stored audit as a self-contained HTML page a reviewer can share (`auditor report --html`).

Everything is inline, so the file opens offline and survives being mailed: CSS in a `<style>`
element, evidence charts as inline SVG bars, channel galleries (the PNG strips of
`auditor.artefacts.gallery_files`) as `data:image/png;base64` URIs. Per finding: its severity,
kind and title, a chart of the evidence figures that decide it, the evidence fields, the
galleries of its channels and its review verdicts. Galleries that no finding links (the global
top-k) follow in their own section. Read from the store only (the audit's rows and its
registered files), never from the model or the samples.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from auditor.artefacts.gallery_files import read_manifest
from auditor.errors import AuditorError
from auditor.redaction import redact
from auditor.store import ArtefactRow, AuditRow, AuditStore, FindingRow, ReviewRow
from auditor.store.retention import local_path

#: per finding kind, the figures its chart compares: (chart title, [(bar label, evidence path)])
CHARTS: dict[str, list[tuple[str, list[tuple[str, str]]]]] = {
    "probe_sensitivity": [
        ("flip rate", [("probe", "flip_rate"), ("neutral twin", "neutral_flip_rate")]),
        ("margin lost", [("probe", "margin_drop"), ("neutral twin", "neutral_margin_drop")]),
    ],
    "spurious_channels": [
        ("decision margin lost when the channels are dropped", [
            ("top-k", "dropout.top_k_margin_drop"), ("random-k (mean)", "dropout.random_k_margin_drop_mean"),
            ("random-k (max)", "dropout.random_k_margin_drop_max"), ("bottom-k", "dropout.bottom_k_margin_drop"),
        ]),
        ("activation lost under the probe", [
            ("top-k", "top_k_activation_drop"), ("random-k (mean)", "random_k_activation_drop_mean"),
        ]),
    ],
    "explanation_drift": [("statistic against its threshold", [("value", "value"), ("threshold", "threshold")])],
    "unlabeled_subclass": [
        ("distance", [("members", "member_distance"), ("to the reference", "reference_distance")]),
    ],
}  # fmt: skip
SEVERITY_COLOUR = {"high": "#c62828", "medium": "#ef6c00", "low": "#1565c0"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; }
.finding { border: 1px solid #ddd; border-radius: 6px; padding: 1em; margin: 1em 0; }
.badge { color: #fff; border-radius: 4px; padding: 0.1em 0.5em; font-weight: bold; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { padding: 0.2em 0.6em; text-align: left; }
tr:nth-child(even) { background: #f6f6f6; } .gallery img { max-width: 100%; display: block; margin: 0.3em 0; }
.charts { display: flex; flex-wrap: wrap; gap: 2em; } .muted { color: #777; }
"""


def render_audit_html(store: AuditStore, audit_id: int) -> str:
    """The audit's page (see the module docstring); `StoreError` if there is no such audit."""
    audit = store.get_audit(audit_id)  # findings with their artefacts and reviews
    findings = sorted(audit.findings, key=lambda f: f.id)
    shown: set[str] = set()
    body = [_header(audit), f"<h2>Findings ({len(findings)})</h2>"]
    body += [_finding(f, audit.artefacts, shown) for f in findings] or ["<p>No findings.</p>"]
    body.append(_other_galleries(audit.artefacts, shown))
    title = html.escape(f"Audit {audit.id}: {redact(audit.model_uri)}")
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_audit_html(store: AuditStore, audit_id: int, path: Path) -> Path:
    """Write the audit's page to `path` (its folder created); `AuditorError` if it cannot."""
    page = render_audit_html(store, audit_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as err:
        raise AuditorError(f"cannot write the HTML report {path}: {err.strerror}", "choose a writable --html path") from err
    return path


def _header(audit: AuditRow) -> str:
    version = audit.model_version
    model = f"{version.model.name} version {version.version}" if version is not None else audit.model_uri
    rows = [
        ("model", f"{model} ({redact(audit.model_uri)})"), ("status", audit.status),
        ("layer", audit.layer or "-"), ("samples", f"{audit.n_samples} ({audit.n_labelled} labelled)"),
        ("started", f"{audit.started_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("finished", f"{audit.finished_at:%Y-%m-%d %H:%M:%S} UTC" if audit.finished_at else "-"),
    ]  # fmt: skip
    if audit.error:
        rows.append(("error", redact(audit.error)))
    return f"<h1>Relevance audit {audit.id}</h1>" + _table(rows)


def _finding(finding: FindingRow, artefacts: list[ArtefactRow], shown: set[str]) -> str:
    colour = SEVERITY_COLOUR.get(finding.severity, "#555")
    probe = f" &middot; probe {html.escape(finding.probe)}" if finding.probe else ""
    charts = "".join(_chart(title, [(label, _lookup(finding.evidence, path)) for label, path in bars])
                     for title, bars in CHARTS.get(finding.kind, []))  # fmt: skip
    linked = [a for a in artefacts if a.finding_id == finding.id and a.kind in ("gallery", "heatmap")]
    return (
        f"<section class='finding' id='finding-{finding.id}'>"
        f"<p><span class='badge' style='background:{colour}'>{html.escape(finding.severity)}</span> "
        f"<b>{html.escape(finding.kind)}</b>{probe}</p><h3>{html.escape(finding.title)}</h3>"
        f"<div class='charts'>{charts}</div>"
        f"<details><summary>evidence</summary>{_table(_flat(finding.evidence))}</details>"
        f"{_galleries(linked, shown)}{_reviews(finding.reviews)}</section>"
    )


def _reviews(reviews: list[ReviewRow]) -> str:
    if not reviews:
        return "<p class='muted'>Review: not reviewed yet.</p>"
    rows = [
        (f"{r.created_at:%Y-%m-%d %H:%M}", f"{r.status} by {r.reviewer}" + (f": {r.comment}" if r.comment else ""))
        for r in reviews
    ]
    return "<p><b>Review verdicts</b></p>" + _table(rows)


def _galleries(artefacts: Iterable[ArtefactRow], shown: set[str]) -> str:
    """Each artefact's PNG inline, under the name of its file (channel and strip kind)."""
    parts = []
    for artefact in artefacts:
        path = local_path(artefact.uri)
        if artefact.pruned_at is not None or path is None or not path.is_file():
            parts.append(f"<p class='muted'>{html.escape(Path(artefact.uri).name)}: file removed (retention)</p>")
            continue
        shown.add(str(path.resolve()))
        label = path.stem.replace("_", " ")
        parts.append(f"<figure><figcaption>{html.escape(label)}</figcaption>{_png(path)}</figure>")
    return f"<div class='gallery'>{''.join(parts)}</div>" if parts else ""


def _other_galleries(artefacts: list[ArtefactRow], shown: set[str]) -> str:
    """The channel galleries of the manifest that no finding section showed."""
    manifests = [local_path(a.uri) for a in artefacts if a.kind == "gallery_manifest" and a.pruned_at is None]
    manifest = next((p for p in manifests if p is not None and p.is_file()), None)
    if manifest is None:
        return ""
    gallery = read_manifest(manifest)
    folder = Path(gallery.directory)
    parts = []
    for channel in gallery.channels:
        files = [folder / channel.samples_image, folder / channel.heatmaps_image]
        if any(str(f.resolve()) in shown for f in files) or not all(f.is_file() for f in files):
            continue
        sets = ", ".join(channel.sets)
        parts.append(
            f"<figure><figcaption>channel {channel.channel} ({html.escape(sets)}): samples, heatmaps"
            f"</figcaption>{_png(files[0])}{_png(files[1])}</figure>"
        )
    if not parts:
        return ""
    return f"<h2>Channel galleries of {html.escape(gallery.layer)}</h2><div class='gallery'>{''.join(parts)}</div>"


def _chart(title: str, bars: list[tuple[str, float | None]]) -> str:
    """A horizontal bar chart as inline SVG; bars without a value are left out."""
    values = [(label, float(v)) for label, v in bars if isinstance(v, int | float)]
    if not values:
        return ""
    top = max(max(abs(v) for _, v in values), 1e-12)
    row, label_w, bar_w = 22, 130, 220
    parts = [f"<text x='0' y='14' font-weight='bold'>{html.escape(title)}</text>"]
    for i, (label, value) in enumerate(values):
        y = 24 + i * row
        width = bar_w * abs(value) / top
        parts.append(
            f"<text x='0' y='{y + 14}'>{html.escape(label)}</text>"
            f"<rect x='{label_w}' y='{y + 3}' width='{width:.1f}' height='{row - 6}' fill='#4e79a7'/>"
            f"<text x='{label_w + width + 4:.1f}' y='{y + 14}'>{value:.3g}</text>"
        )
    height = 30 + len(values) * row
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_w + bar_w + 60}' height='{height}' "
        f"font-size='12' role='img' aria-label='{html.escape(title)}'>{''.join(parts)}</svg>"
    )


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>"


def _lookup(evidence: dict[str, Any], path: str) -> Any:
    value: Any = evidence
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _flat(evidence: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Evidence fields as (dotted name, text) rows; lists shown as JSON."""
    rows: list[tuple[str, str]] = []
    for key, value in evidence.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flat(value, f"{name}.")
        else:
            rows.append((name, f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, list) else str(value)))
    return rows


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"
