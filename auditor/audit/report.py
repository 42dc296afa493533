"""The JSON report of an audit: a stable format that other tools read (see README, "Report").

`format_version` changes only when a field is removed or changes meaning.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from auditor.artefacts.gallery_files import manifest_dict
from auditor.checks.subclasses import report_section
from auditor.results import AuditResult, ClassAnalysis, DoseResponse, DropoutTable, ProbeResult

FORMAT_VERSION = 1


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
            }
            for s in c.probe_shifts
        },
    }


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
        "findings": [asdict(f) for f in result.findings],
        "timings": result.timings,
    }


@contextmanager
def staged_report(path: Path | None, audit_id: int, result: AuditResult) -> Iterator[None]:
    """Write the report beside `path`, and move it into place only when the body (storing the
    audit) succeeds: a report file exists exactly for a stored audit."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(json.dumps(build_report(audit_id, result), indent=2))
    try:
        yield
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    staging.replace(path)
