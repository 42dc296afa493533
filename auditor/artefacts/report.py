"""The JSON report of an audit: a stable format that other tools read (see README, "Report").

`format_version` changes only when a field is removed or changes meaning. Version 3: a probe's
`neutral` is its control (another class's change of the same kind and size, not Gaussian
noise), and `top_k_activation_drop` / `random_k_activation_drops` are shares of activation
lost over the channels' magnitudes, never clipped (negative: a gain).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from auditor.artefacts.gallery_files import manifest_dict
from auditor.errors import ReportError
from auditor.results import (
    AuditResult,
    ClassAnalysis,
    DoseResponse,
    DropoutTable,
    Finding,
    ProbeResult,
    SubclassResult,
)

FORMAT_VERSION = 3
"""2: findings grouped verdict by verdict, the most specific first (`supports`, `explanation`,
the `verdicts` section). 3: a probe's `neutral` is its control and activation drops are
unclipped shares of magnitude (see above)."""


def _probe(p: ProbeResult) -> dict[str, Any]:
    return {
        "probed": asdict(p.probed),
        "neutral": asdict(p.neutral),
        "perturbation_norm": p.perturbation_norm,
        "top_k_activation_drop": p.top_k_activation_drop,
        "random_k_activation_drops": p.random_k_activation_drops,
        "occlusion": None
        if p.occlusion is None
        else {**asdict(p.occlusion), "concentration": p.occlusion.concentration},
        "per_class": [{**asdict(c), "excess": c.excess} for c in p.per_class],
    }


def _dropout(d: DropoutTable) -> dict[str, Any]:
    return {
        "k": d.k,
        "baseline": asdict(d.baseline),
        "top_k": asdict(d.top_k),
        "random_k": d.random_k_mean,
        "random_k_runs": [{"channels": s, **asdict(m)} for s, m in zip(d.random_sets, d.random_k)],
        "bottom_k": asdict(d.bottom_k),
        "statistics": None if d.statistics is None else asdict(d.statistics),
    }


def _dose_response(dose: DoseResponse | None) -> dict[str, Any] | None:
    if dose is None:
        return None
    return {
        "n_channels": dose.n_channels,
        "points": [
            {
                "k": p.k,
                "top_k": asdict(p.top_k),
                "random_k": p.random_k_mean,
                "random_k_spread": p.random_k_spread,
                "bottom_k": asdict(p.bottom_k),
                "statistics": asdict(p.statistics),
            }
            for p in dose.points
        ],
    }


def _class(c: ClassAnalysis) -> dict[str, Any]:
    return {
        "class_index": c.class_index,
        "class_name": c.class_name,
        "n_samples": c.n_samples,
        "top_k": c.top_k,
        "bottom_k": c.bottom_k,
        "relevance": c.relevance,
        "dropout": _dropout(c.dropout),
        "probes": {
            s.probe: {
                "top_k_activation_drop": s.top_k_activation_drop,
                "random_k_activation_drops": s.random_k_activation_drops,
                "collapse": s.collapse,
                "test": None if s.test is None else asdict(s.test),
            }
            for s in c.probe_shifts
        },
    }


def report_section(result: SubclassResult) -> dict[str, Any]:
    """The report's `subclasses` entry (findings are in the report's `findings`)."""
    return {
        "layer": result.layer,
        "metric": result.metric,
        "k": result.k,
        "eigenvalues": result.eigenvalues,
        "clusters": [asdict(c) for c in result.clusters],
        "maps": [m.method for m in result.maps],
        "artefacts": [asdict(a) for a in result.artefacts],
        "note": result.note,
    }


def finding_dict(f: Finding) -> dict[str, Any]:
    """A finding as the report lists it (its evidence as JSON)."""
    return {
        "kind": f.kind,
        "severity": f.severity,
        "title": f.title,
        "evidence": f.evidence.model_dump(mode="json"),
        "probe": f.probe,
        "supports": f.supports,
        "explanation": None if f.explanation is None else f.explanation.model_dump(mode="json"),
    }


def verdicts_section(findings: list[Finding]) -> list[dict[str, Any]]:
    """One entry per verdict: the index of its heading finding and of its supporting ones."""
    heads = [i for i, f in enumerate(findings) if f.supports is None]
    return [
        {"finding": h, "supporting": [i for i, f in enumerate(findings) if f.supports == h]}
        for h in heads
    ]


def build_report(audit_id: int, result: AuditResult) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "audit_id": audit_id,
        "model": asdict(result.model),
        "samples": {
            "n": result.n_samples,
            "n_labelled": result.n_labelled,
            "sets": result.sample_sets,
        },
        "channels": {
            "layer": result.channels.layer,
            "method": result.channels.method,
            "k": result.channels.k,
            "top_k": result.channels.top_k,
            "bottom_k": result.channels.bottom_k,
            "relevance": result.channels.relevance,
        },
        "dropout": _dropout(result.dropout),
        "probes": {p.name: _probe(p) for p in result.probes},
        "classes": [_class(c) for c in result.classes],
        "dose_response": _dose_response(result.dose_response),
        "subclasses": report_section(result.subclasses) if result.subclasses else None,
        "gallery": manifest_dict(result.gallery) if result.gallery else None,
        "findings": [finding_dict(f) for f in result.findings],
        "verdicts": verdicts_section(result.findings),
        "timings": result.timings,
    }


def staging_path(path: Path) -> Path:
    """Where the report waits until its audit is stored: `.<name>.partial` beside `path`."""
    return path.with_name(f".{path.name}.partial")


def stage_report(path: Path, audit_id: int, result: AuditResult) -> Path:
    """Write the report beside `path` (`staging_path`), before the audit is stored: a report
    that cannot be written fails the audit before anything is committed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(path)
    staging.write_text(json.dumps(build_report(audit_id, result), indent=2))
    return staging


def publish_report(path: Path, audit_id: int) -> None:
    """Move the staged report of the stored audit `audit_id` into place: a report file exists
    exactly for a stored audit. A failure here leaves the stored audit as it is and is a
    `ReportError` naming the path."""
    staging = staging_path(path)
    try:
        staging.replace(path)
    except OSError as err:
        staging.unlink(missing_ok=True)
        raise ReportError(
            f"audit {audit_id} is stored, but its report {path} could not be written: "
            f"{err.strerror or err}",
            "pass --report a writable file path (not a folder); the audit's results are in the "
            "database and its files in place",
        ) from err


def discard_report(path: Path) -> None:
    """Remove the staged report of an audit that was not stored (none was staged where its
    folder is missing or is a file)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        staging_path(path).unlink()
