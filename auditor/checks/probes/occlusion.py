"""The patch-occlusion probe: one cell of a grid x grid partition filled, and the occlusion map of
a scan over every cell."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from auditor.checks.probes.base import PROBES, Probe
from auditor.checks.probes.transforms import check_fill, fill_values
from auditor.results import OcclusionMap


@PROBES.register("patch_occlusion")
@dataclass(frozen=True)
class PatchOcclusion(Probe):
    """Cell `cell` (row-major; rows `r * H // grid` to `(r + 1) * H // grid`, columns alike) set
    to the fill. Without a cell the probe is a scan: the audit's probe stage occludes every cell
    in turn (`auditor.audit.passes.OcclusionTask`) and runs the probe of the cell with the
    largest effect (`at(occlusion_summary(...).worst_cell)`)."""

    name = "patch_occlusion"
    description = "remove one patch: a cell of a grid x grid partition filled (scans all cells)"
    grid: int = 4
    cell: int | None = None
    fill: float | Literal["mean"] = "mean"

    def __post_init__(self) -> None:
        if self.grid < 2:
            raise ValueError("grid must be >= 2")
        if self.cell is not None and not 0 <= self.cell < self.grid**2:
            raise ValueError(f"cell must be in [0, {self.grid**2}) for a grid of {self.grid}")
        check_fill(self.fill)

    @property
    def scans(self) -> bool:
        """Without a cell: a scan of every cell, to be placed at its worst cell."""
        return self.cell is None

    def cells(self) -> list[PatchOcclusion]:
        """The probe of every cell, row-major."""
        return [self.at(cell) for cell in range(self.grid**2)]

    def at(self, cell: int) -> PatchOcclusion:
        return replace(self, cell=cell)

    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        if self.cell is None:
            raise ValueError(
                "patch_occlusion without a cell scans the grid: list it in an audit's probes, or set cell"
            )
        height, width = images.shape[-2:]
        row, col = divmod(self.cell, self.grid)
        out = images.clone()
        rows = slice(row * height // self.grid, (row + 1) * height // self.grid)
        cols = slice(col * width // self.grid, (col + 1) * width // self.grid)
        out[..., rows, cols] = fill_values(images, self.fill)
        return out


def occlusion_summary(lost: np.ndarray, flipped: np.ndarray, probe: PatchOcclusion) -> OcclusionMap:
    """The occlusion map of a scan: per grid cell, the mean share of margin lost (`margin_lost`
    against the unmodified logits) and the flip rate over the samples, from the per-sample
    values `lost` and `flipped` (N x cells, `auditor.audit.passes.OcclusionTask`)."""
    shape = (probe.grid, probe.grid)
    drops = lost.mean(axis=0)
    return OcclusionMap(
        grid=probe.grid,
        margin_drop=np.reshape(drops, shape).tolist(),
        flip_rate=np.reshape(flipped.mean(axis=0), shape).tolist(),
        worst_cell=int(np.argmax(drops)),
    )

