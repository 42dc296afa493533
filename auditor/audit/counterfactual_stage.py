"""The counterfactual stage of an audit: each `spurious_channels` finding's cue transplanted into
samples of other classes, against its control (`auditor.checks.counterfactual`), in two streamed
passes over the few transplanted images; the result joins the finding's evidence and sets its
severity (confirmed: high; not confirmed: one level lower)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from auditor.audit.passes import ForwardTask, RelevancePass, layer_pass
from auditor.audit.stages import PassRunner
from auditor.checks.counterfactual import (
    control_cells,
    control_transplant,
    flip_test,
    is_localized,
    pairing,
    transplant,
)
from auditor.checks.probes.base import Probe
from auditor.config import CounterfactualSettings
from auditor.data.images import ArrayImages
from auditor.evidence import CounterfactualEvidence
from auditor.results import Finding

LOWER = {"high": "medium", "medium": "low", "low": "low"}


def _predicted(runner: PassRunner, images: torch.Tensor, description: str) -> np.ndarray:
    out, _ = layer_pass(
        runner.executor, runner.model, ArrayImages(images.numpy()), ForwardTask(description),
        runner.batch_size,
    )  # fmt: skip
    return out.logits.argmax(dim=1).numpy()


def confirm(
    finding: Finding,
    probe: Probe,
    runner: PassRunner,
    predicted: np.ndarray,
    ids: list[str],
    settings: CounterfactualSettings,
) -> Finding:
    """The finding with its counterfactual evidence and severity (unchanged without recipients
    or donors)."""
    shortcut = finding.evidence.class_index
    localized = is_localized(probe)
    pairs = pairing(predicted, shortcut, localized, settings.recipients, runner.seed)
    if pairs is None:
        return finding
    read = lambda rows: torch.from_numpy(runner.images.read(rows))
    recipients, donors = read(pairs.recipients), read(pairs.donors)
    cells = None
    if localized:
        cells = control_cells(probe, len(recipients), np.random.default_rng(runner.seed))
        control_donors = donors
    else:
        control_donors = read(pairs.control_donors)
    name = finding.probe
    cue = _predicted(runner, transplant(probe, recipients, donors), f"cue of {name}")
    control = _predicted(
        runner, control_transplant(probe, recipients, control_donors, cells),
        f"control of {name}",
    )  # fmt: skip
    test = flip_test(cue, control, shortcut, settings.alpha)
    evidence = CounterfactualEvidence(
        n_recipients=test.n_recipients,
        flip_rate=test.flip_rate,
        control_flip_rate=test.control_flip_rate,
        control="random_region" if localized else "same_class_donor",
        cue_only=test.cue_only,
        control_only=test.control_only,
        p_value=test.p_value,
        alpha=settings.alpha,
        confirmed=test.confirmed,
        recipients=[ids[i] for i in pairs.recipients],
        donors=[ids[i] for i in pairs.donors],
    )
    verdict = "confirms" if test.confirmed else "does not confirm"
    return replace(
        finding,
        severity="high" if test.confirmed else LOWER[finding.severity],
        title=(
            f"{finding.title}; transplanting the cue into {test.n_recipients} other samples "
            f"moves {test.flip_rate:.0%} to '{finding.evidence.class_name}' (control "
            f"{test.control_flip_rate:.0%}): {verdict} the shortcut"
        ),
        evidence=finding.evidence.model_copy(update={"counterfactual": evidence}),
    )


def counterfactual_stage(
    runner: PassRunner,
    base: RelevancePass,
    probes: dict[str, Probe],
    findings: list[Finding],
    ids: list[str],
    settings: CounterfactualSettings,
) -> list[Finding]:
    """`findings` with each `spurious_channels` finding confirmed or not by its cue's
    transplant (`probes`: each probe the audit ran, by its label); the other findings as they
    are."""
    if not settings.enabled:
        return findings
    predicted = base.logits.argmax(dim=1).numpy()
    return [
        confirm(f, probes[f.probe], runner, predicted, ids, settings)
        if f.kind == "spurious_channels" and f.probe in probes
        else f
        for f in findings
    ]
