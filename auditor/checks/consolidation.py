"""Consolidation: findings about the same cue and class merged into one verdict, the most
specific explanation first, each other finding listed as its support.

1. Same cue: a `spurious_channels` finding and the `probe_sensitivity` finding of its probe
   state one cue; the channel finding (it names the class and the channels) heads the verdict.
2. A localized cue explains others: a small mark (a corner tag) also makes `border_mask`,
   `blur`, `high_pass_removal`, `brightness_contrast` flip predictions, because each of them
   changes the mark. With `patch_occlusion` at cell `c` flagged, every other flagged probe `Q`
   is re-run on the images with cell `c` occluded, `Q(P_c(x))` against `P_c(x)`. Per sample:
   `f_i` = Q flips `x`, `g_i` = Q flips `P_c(x)`. `Q` is explained by the cell when its flips
   vanish: McNemar's exact one-sided test [McNemar1947] that `g` is rarer than `f`
   (`b = #(f & ~g)`, `c = #(g & ~f)`, `p = P(B >= b)`, `B ~ Binomial(b + c, 1/2)`) at `alpha`,
   and what remains, `mean g` minus Q's neutral flip rate, is below the excess that makes a
   `probe_sensitivity` finding (the finding would not be raised on occluded images).
   The explained findings support the cell's verdict.

Specificity: a localized cue (one cell) before any global one; within a cue, the channel
finding before the probe finding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import binomtest

from auditor.evidence import CueExplanation
from auditor.results import Finding


def explained_by_cell(
    flipped: np.ndarray,
    flipped_occluded: np.ndarray,
    neutral_flip_rate: float,
    excess_threshold: float,
    alpha: float,
    cell_probe: str,
) -> CueExplanation:
    """Does occluding the cell make a probe's flips vanish (module docstring, point 2)?
    `flipped` / `flipped_occluded`: per sample, the probe flips the image / the occluded
    image."""
    b = int((flipped & ~flipped_occluded).sum())
    c = int((flipped_occluded & ~flipped).sum())
    p = float(binomtest(b, b + c, 0.5, alternative="greater").pvalue) if b + c else 1.0
    remaining = float(flipped_occluded.mean()) - neutral_flip_rate
    return CueExplanation(
        explained_by=cell_probe,
        flip_rate=float(flipped.mean()),
        occluded_flip_rate=float(flipped_occluded.mean()),
        neutral_flip_rate=neutral_flip_rate,
        vanished=b,
        appeared=c,
        p_value=p,
        remaining_excess=remaining,
        excess_threshold=excess_threshold,
        alpha=alpha,
        explained=p <= alpha and remaining < excess_threshold,
    )


def _probe_name(probe: str | None) -> str | None:
    return probe.split("(")[0] if probe else None


@dataclass(frozen=True)
class Verdict:
    """One verdict: the finding that heads it and the findings that support it (indices into
    the audit's findings)."""

    head: int
    supporting: list[int]


def _class_of(finding: Finding) -> int | None:
    return getattr(finding.evidence, "class_index", None)


def verdicts(findings: list[Finding], explanations: dict[str, CueExplanation]) -> list[Verdict]:
    """Group `findings` into verdicts (module docstring): per cue, one verdict per class its
    channel findings name (the probe findings, which name no class, join the first); every
    other finding is a verdict of its own. `explanations`: per probe label, the cell test of
    that probe (a probe explained by the cell takes the cell's cue)."""
    cue_of: dict[int, str] = {}
    for i, f in enumerate(findings):
        if f.kind not in ("spurious_channels", "probe_sensitivity") or f.probe is None:
            continue
        explanation = explanations.get(f.probe)
        cue_of[i] = explanation.explained_by if explanation and explanation.explained else f.probe
    by_cue: dict[str, list[int]] = {}
    for i, cue in cue_of.items():
        by_cue.setdefault(cue, []).append(i)
    out = []
    for cue, members in by_cue.items():
        classes = sorted({c for i in members if (c := _class_of(findings[i])) is not None})
        parts = {c: [i for i in members if _class_of(findings[i]) == c] for c in classes}
        classless = [i for i in members if _class_of(findings[i]) is None]
        if not parts:
            parts = {None: []}
        parts[next(iter(parts))] += classless
        for part in parts.values():
            ordered = sorted(part, key=lambda i: (
                findings[i].probe != cue,  # the cue's own probe first
                findings[i].kind != "spurious_channels",
                i,
            ))  # fmt: skip
            out.append(Verdict(ordered[0], ordered[1:]))
    out += [Verdict(i, []) for i in range(len(findings)) if i not in cue_of]
    localized = lambda v: v.head in cue_of and _probe_name(cue_of[v.head]) == "patch_occlusion"
    return sorted(out, key=lambda v: (not localized(v), min([v.head, *v.supporting])))


def consolidated(findings: list[Finding], explanations: dict[str, CueExplanation]) -> list[Finding]:
    """`findings` ordered verdict by verdict (head, then its support), each supporting
    finding pointing at its head's new index (`Finding.supports`) with the cell test that
    explains it (`Finding.explanation`, where one does)."""
    ordered: list[Finding] = []
    for verdict in verdicts(findings, explanations):
        head = len(ordered)
        ordered.append(findings[verdict.head])
        for i in verdict.supporting:
            f = findings[i]
            explanation = explanations.get(f.probe) if f.probe else None
            ordered.append(replace(
                f, supports=head,
                explanation=explanation if explanation and explanation.explained else None,
            ))  # fmt: skip
    return ordered
