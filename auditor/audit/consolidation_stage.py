"""The consolidation stage of an audit: with a localized cue flagged (`patch_occlusion` at a
cell), every other flagged probe re-run on the images with that cell occluded (one streamed
pass for the occluded images, one per other probe), then the findings merged into verdicts
(`auditor.checks.consolidation`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from auditor.audit.passes import ForwardTask, RelevancePass, layer_pass
from auditor.audit.stages import PassRunner, ProbeRun
from auditor.checks.consolidation import consolidated, explained_by_cell
from auditor.checks.counterfactual import is_localized
from auditor.checks.probes.base import Probe
from auditor.config import ConsolidationSettings
from auditor.evidence import CueExplanation
from auditor.execution.base import Outputs
from auditor.results import Finding

PROBE_KINDS = ("probe_sensitivity", "spurious_channels")


@dataclass(frozen=True)
class OccludedThen:
    """`then(cell(x))`: a probe applied to the images with the cell occluded (seeded like the
    audit's probe passes)."""

    cell: Probe
    then: Probe | None
    seed: int

    def __call__(self, images: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, Outputs]:
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + 500_009 + int(rows[0]))
        out = self.cell(images.cpu(), rng)
        if self.then is not None:
            out = self.then(out, rng)
        return out.to(images.device), {}


def _predicted(runner: PassRunner, cell: Probe, then: Probe | None, description: str) -> np.ndarray:
    out, _ = layer_pass(
        runner.executor, runner.model, runner.images,
        ForwardTask(description, OccludedThen(cell, then, runner.seed)), runner.batch_size,
    )  # fmt: skip
    return out.logits.argmax(dim=1).numpy()


def cell_explanations(
    runner: PassRunner,
    base: RelevancePass,
    runs: dict[str, ProbeRun],
    flagged: list[str],
    excess_threshold: float,
    alpha: float,
) -> dict[str, CueExplanation]:
    """Per flagged probe other than the first flagged localized one: the test whether that
    cell explains it ({} without a flagged cell)."""
    cells = [label for label in flagged if is_localized(runs[label].probe)]
    if not cells:
        return {}
    cell = runs[cells[0]].probe
    predicted = base.logits.argmax(dim=1).numpy()
    occluded = _predicted(runner, cell, None, f"occluded {cells[0]}")
    out = {}
    for label in flagged:
        if label == cells[0]:
            continue
        run = runs[label]
        probed = run.probed.logits.argmax(dim=1).numpy()
        both = _predicted(runner, cell, run.probe, f"{label} on occluded {cells[0]}")
        out[label] = explained_by_cell(
            probed != predicted, both != occluded, run.result.neutral.flip_rate,
            excess_threshold, alpha, cells[0],
        )  # fmt: skip
    return out


def consolidation_stage(
    runner: PassRunner,
    base: RelevancePass,
    probes: list[ProbeRun],
    findings: list[Finding],
    excess_threshold: float,
    settings: ConsolidationSettings,
) -> list[Finding]:
    """`findings` merged into verdicts, the most specific first (unchanged when disabled)."""
    if not settings.enabled:
        return findings
    runs = {run.result.name: run for run in probes}
    flagged = list(dict.fromkeys(
        f.probe for f in findings if f.kind in PROBE_KINDS and f.probe in runs
    ))  # fmt: skip
    explanations = cell_explanations(runner, base, runs, flagged, excess_threshold, settings.alpha)
    return consolidated(findings, explanations)
