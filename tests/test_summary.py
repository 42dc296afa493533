"""The console summary of an audit at a 128-channel layer, rendered at 80 columns: every line
fits, the most relevant channels and the findings' channels are named, the rest is left to
the report."""

from __future__ import annotations

import re

import numpy as np
from rich.console import Console

from auditor.audit.summary import print_summary
from auditor.config import AuditConfig
from auditor.results import (
    AuditOutcome,
    AuditResult,
    ChannelTable,
    ClassAnalysis,
    ConditionMetrics,
    DropoutTable,
    Finding,
    ModelRef,
    ProbeResult,
    ProbeShift,
)

from .evidence_examples import example_evidence

CHANNELS, K = 128, 26


def _metrics(flip: float) -> ConditionMetrics:
    return ConditionMetrics(
        accuracy=1 - flip, average_precision=0.9, flip_rate=flip, logit_drop=2 * flip,
        n_samples=600, n_labelled=300, margin_drop=flip,
    )  # fmt: skip


def _dropout(top_k: list[int], rng: np.random.Generator) -> DropoutTable:
    others = [c for c in range(CHANNELS) if c not in top_k]
    return DropoutTable(
        k=K, baseline=_metrics(0.0), top_k=_metrics(0.4), random_k=[_metrics(0.05)] * 5,
        bottom_k=_metrics(0.0), random_sets=[list(rng.choice(others, K, replace=False)) for _ in range(5)],
    )  # fmt: skip


def wide_outcome() -> AuditOutcome:
    rng = np.random.default_rng(0)
    relevance = rng.random(CHANNELS) / CHANNELS
    order = [int(c) for c in np.argsort(-relevance)]
    top_k, bottom_k = order[:K], order[-K:]
    shift = ProbeShift("grayscale", 0.9, [0.2] * 5)
    classes = [
        ClassAnalysis(
            class_index=i, class_name=name, n_samples=300, relevance=list(relevance), top_k=top_k[::-1] if i else top_k,
            bottom_k=bottom_k, dropout=_dropout(top_k, rng), probe_shifts=[shift],
        )
        for i, name in enumerate(["real", "fake"])
    ]
    findings = [
        Finding(
            "spurious_channels", "high",
            f"the {K} most relevant channels of stage4.conv for class 'fake' lose 90% of their "
            "activation under grayscale (random channels: 20%)",
            example_evidence("spurious_channels", channels=top_k[::-1], layer="stage4.conv"), probe="grayscale",
        ),
        Finding(
            "probe_sensitivity", "high",
            "grayscale flips 40% of predictions; a neutral perturbation of the same size flips 3%",
            example_evidence("probe_sensitivity"), probe="grayscale",
        ),
    ]  # fmt: skip
    result = AuditResult(
        model=ModelRef("models:/wide-detector@production", "wide-detector", "7", "pytorch-pt2"),
        n_samples=600, n_labelled=300, sample_sets={"validation": 300, "production": 300},
        channels=ChannelTable("stage4.conv", "lrp:epsilon_plus", list(relevance), top_k, bottom_k),
        dropout=_dropout(top_k, rng), probes=[ProbeResult("grayscale", _metrics(0.4), _metrics(0.03), 12.0, 0.9, [0.2] * 5)],
        findings=findings, timings={"total": 12.5}, classes=classes,
    )  # fmt: skip
    return AuditOutcome(audit_id=42, result=result, report_path=None)


def test_summary_of_a_128_channel_layer_fits_80_columns():
    outcome = wide_outcome()
    config = AuditConfig.model_validate(
        {"model": {"uri": "models:/wide-detector@production"}, "samples": [{"name": "p", "uri": "p.npz"}],
         "store_url": "sqlite:///findings.db"}
    )  # fmt: skip
    console = Console(width=80, record=True, color_system=None, force_terminal=False)
    print_summary(console, outcome, config)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert len(lines) < 60  # one screen, not pages of channel numbers

    top = outcome.result.channels.top_k
    first_line = next(line for line in lines if line.startswith("top-26 of 128 channels"))
    relevance = outcome.result.channels.relevance
    assert first_line.startswith(f"top-26 of 128 channels (lrp:epsilon_plus, relevance): {top[0]} ({relevance[top[0]]:.3f})")
    flat = " ".join(text.split())  # cells wrap inside the tables
    assert "+18 more (all in the report)" in flat
    listed = flat.split("relevance): ")[1].split(" +18 more")[0]
    assert [int(c) for c in re.findall(r"(\d+) \(0\.\d+\)", listed)] == top[:8]  # the most relevant
    # the findings, each with the channels it is about (the class's most relevant first)
    findings = lines[next(i for i, line in enumerate(lines) if line.startswith("Findings")) :]
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in findings if line.startswith("│")]
    kinds, titles = (" ".join(" ".join(column).split()) for column in zip(*[(c[1], c[2]) for c in cells]))
    assert kinds == "spurious_channels (grayscale) probe_sensitivity (grayscale)"
    fake_top = ", ".join(str(c) for c in top[::-1][:4])
    assert f"lose 90% of their activation under grayscale (random channels: 20%) channels: {fake_top} +22 more" in titles
    assert "grayscale flips 40% of predictions" in titles
