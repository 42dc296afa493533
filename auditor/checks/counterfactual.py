"""Counterfactual confirmation of a suspected cue: transplant it into samples of another class
and count how often the prediction moves to the class the cue is suspected to stand for.

The cue is what the finding's probe `P` removes, so the transplant of donor `d`'s cue into
recipient `x` is `x' = clip(P(x) + (d - P(d)), 0, 1)`: the recipient without its own cue, plus
the donor's. For `patch_occlusion` at a cell that pastes the donor's cell (shifted by the fill
difference): a localized cue; for `grayscale` the donor's chroma, for `high_pass_removal` /
`blur` its fine texture, for `brightness_contrast` its statistics.

Recipients are samples predicted as another class, each paired with a donor predicted as the
shortcut class. The control is the same operation without the cue: for a localized probe
(`patch_occlusion`) the same donor's region of the same size at a random other cell; for any
other probe a donor predicted as the recipient's own class.

Test (paired, per recipient: did the prediction move to the shortcut class under the
transplant, under the control?): McNemar's exact one-sided test [McNemar1947], with `b`
recipients flipped by the cue only and `c` by the control only, `p = P(B >= b)`,
`B ~ Binomial(b + c, 1/2)`. The cue is `confirmed` at `p <= alpha`: a cue that does not move
predictions beyond its control is confirmed at most at rate `alpha`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.stats import binomtest

from auditor.checks.probes.base import Probe
from auditor.checks.probes.occlusion import PatchOcclusion


def transplant(probe: Probe, recipients: torch.Tensor, donors: torch.Tensor) -> torch.Tensor:
    """`clip(P(x) + (d - P(d)), 0, 1)` for each recipient `x` and its donor `d` (N x 3 x H x W
    in [0, 1]); a random probe gets one seeded generator per call."""
    rng = torch.Generator().manual_seed(0)
    cue = donors - probe(donors, rng)
    return (probe(recipients, rng) + cue).clamp(0.0, 1.0)


def is_localized(probe: Probe) -> bool:
    """A probe of one region (its control is a random region of the same size)."""
    return isinstance(probe, PatchOcclusion) and probe.cell is not None


def control_cells(probe: PatchOcclusion, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per recipient, a random cell of the probe's grid other than the probe's own."""
    others = np.setdiff1d(np.arange(probe.grid**2), [probe.cell])
    return rng.choice(others, size=n)


def control_transplant(
    probe: Probe, recipients: torch.Tensor, donors: torch.Tensor, cells: np.ndarray | None
) -> torch.Tensor:
    """The control images: a localized probe's donor region at `cells` (per recipient), or,
    with `cells` None, the transplant itself (its donors are then of the recipients' class)."""
    if cells is None:
        return transplant(probe, recipients, donors)
    out = torch.empty_like(recipients)
    for cell in np.unique(cells):
        rows = torch.from_numpy(np.flatnonzero(cells == cell))
        out[rows] = transplant(replace(probe, cell=int(cell)), recipients[rows], donors[rows])
    return out


@dataclass(frozen=True)
class FlipTest:
    """Flip rates to the shortcut class under the transplant and its control, the discordant
    pairs and McNemar's one-sided exact p-value."""

    n_recipients: int
    flip_rate: float
    control_flip_rate: float
    cue_only: int
    control_only: int
    p_value: float
    confirmed: bool


def flip_test(
    cue_predicted: np.ndarray, control_predicted: np.ndarray, shortcut: int, alpha: float
) -> FlipTest:
    """McNemar's exact one-sided test of the cue's flips against the control's (module
    docstring); the recipients' original predictions are all another class."""
    cue = cue_predicted == shortcut
    control = control_predicted == shortcut
    b, c = int((cue & ~control).sum()), int((control & ~cue).sum())
    p = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
    return FlipTest(
        n_recipients=len(cue),
        flip_rate=float(cue.mean()),
        control_flip_rate=float(control.mean()),
        cue_only=b,
        control_only=c,
        p_value=float(p),
        confirmed=bool(p <= alpha),
    )


@dataclass(frozen=True)
class Pairing:
    """Rows of the recipients, their donors of the shortcut class and the control donors."""

    recipients: np.ndarray
    donors: np.ndarray
    control_donors: np.ndarray


def pairing(
    predicted: np.ndarray, shortcut: int, localized: bool, max_recipients: int, seed: int
) -> Pairing | None:
    """Up to `max_recipients` seeded recipients predicted as another class, a donor predicted as
    `shortcut` for each (drawn with replacement) and the control donors: the same donors for a
    localized cue, else a sample predicted as the recipient's class (not itself). None without
    samples of both sides."""
    rng = np.random.default_rng(seed)
    others = np.flatnonzero(predicted != shortcut)
    sources = np.flatnonzero(predicted == shortcut)
    if len(others) < 2 or len(sources) == 0:
        return None
    recipients = np.sort(rng.choice(others, size=min(max_recipients, len(others)), replace=False))
    donors = rng.choice(sources, size=len(recipients))
    if localized:
        return Pairing(recipients, donors, donors)
    control = np.empty_like(recipients)
    for i, row in enumerate(recipients):
        same = np.flatnonzero(predicted == predicted[row])
        same = same[same != row]
        control[i] = rng.choice(same) if len(same) else row
    return Pairing(recipients, donors, control)
