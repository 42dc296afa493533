"""Probes: transforms that remove one candidate cue while keeping the object (seed 000, case C:
grayscale removes colour, "Is color an important feature? Or still texture?"). A probe's effect
is judged against a neutral perturbation of the same size, and by how much the top-k relevant
channels lose their activation compared with random channel sets ("compare forward pass
activation statistics: original vs gray-scaled images for relevant channels").

Every probe maps float images N x 3 x H x W in [0, 1] to images of the same shape in [0, 1]:

| name | cue removed |
| --- | --- |
| `grayscale` | colour (BT.601 luminance in every channel) |
| `blur` | fine texture, high frequencies (Gaussian low-pass, `sigma` pixels) |
| `high_pass_removal` | spatial frequencies above `cutoff` cycles/pixel (ideal FFT low-pass) |
| `high_pass_only` | everything but the frequencies above `cutoff` and the mean (FFT high-pass) |
| `jpeg` | compression-sensitive detail (JPEG re-compression at `quality`, Pillow) |
| `border_mask` | a frame of `width` (share of each side) filled with the image mean or `fill` |
| `brightness_contrast` | global brightness and contrast (each image to `mean`, `std`) |
| `patch_occlusion` | one cell of a `grid` x `grid` partition (the occlusion scan tries all) |

Probes are plug-ins. A probe is a frozen dataclass subclassing `Probe` whose fields are its
parameters (each with a default), registered under its `name`:

    from dataclasses import dataclass
    from auditor.checks.probes import Probe, register_probe

    @register_probe
    @dataclass(frozen=True)
    class Invert(Probe):
        name = "invert"
        description = "remove polarity: 1 - x"
        strength: float = 1.0

        def __call__(self, images, rng=None):
            return images + self.strength * (1 - 2 * images)

Another distribution makes its probes known without an import by declaring them in the entry
point group `relevance_auditor.probes` (entry point name = probe name):

    [project.entry-points."relevance_auditor.probes"]
    invert = "mypackage.probes:Invert"

A config then lists it like any built-in: `probes: {names: [grayscale, {name: invert,
strength: 0.5}]}`. `rng` is a `torch.Generator` the caller seeds from the config; probes that
draw nothing ignore it.
"""

from __future__ import annotations

import io
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, fields, replace
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import TypeAdapter, ValidationError

from auditor.results import OcclusionMap

ENTRY_POINT_GROUP = "relevance_auditor.probes"
LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe(ABC):
    """A transform that removes one cue; its dataclass fields are its parameters."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        """N x 3 x H x W in [0, 1] -> the same shape in [0, 1], without the cue."""

    @property
    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def label(self) -> str:
        """The name, with the parameters that differ from their defaults: `blur(sigma=3.0)`."""
        changed = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) != _default(f)
        ]
        return f"{self.name}({', '.join(changed)})" if changed else self.name

    @property
    def spec(self) -> dict[str, Any]:
        """The config entry that rebuilds this probe (`build_probe`)."""
        return {"name": self.name, **self.params}


def _default(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


_REGISTRY: dict[str, type[Probe]] = {}


def register_probe(cls: type[Probe]) -> type[Probe]:
    """Class decorator: make a probe available under `cls.name` (to configs and `build_probe`)."""
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise TypeError(f"{cls!r} is not a Probe subclass")
    for attribute in ("name", "description"):
        if not isinstance(getattr(cls, attribute, None), str):
            raise TypeError(f"probe class {cls.__qualname__} needs a class attribute '{attribute}'")
    required = [
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    ]
    if required:
        raise TypeError(
            f"probe '{cls.name}': every parameter needs a default, {required} have none"
        )
    known = _REGISTRY.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(
            f"probe '{cls.name}' registered twice: {known.__module__}.{known.__qualname__} "
            f"and {cls.__module__}.{cls.__qualname__}"
        )
    _REGISTRY[cls.name] = cls
    return cls


def discover_probes() -> list[str]:
    """Register the probes that installed distributions declare in the entry point group
    `relevance_auditor.probes`; a plug-in that fails to load is skipped with a warning.
    Returns the names loaded."""
    names = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            names.append(register_probe(point.load()).name)
        except Exception as err:  # noqa: BLE001 -- a broken plug-in must not break audits
            logger.warning("probe plug-in %s = %s not loaded: %s", point.name, point.value, err)
    return names


def known_probes() -> dict[str, str]:
    """Every registered probe (built-in and plug-in), by name, with its description."""
    discover_probes()
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


def build_probe(entry: str | Mapping[str, Any]) -> Probe:
    """A probe from a config entry: a name (default parameters) or a mapping `{name: ...,
    param: value, ...}`. Unknown names and parameters and invalid values raise ValueError."""
    if isinstance(entry, str):
        name, params = entry, {}
    else:
        params = dict(entry)
        if "name" not in params:
            raise ValueError(
                "a probe with parameters needs a 'name', e.g. {name: blur, sigma: 2.0}"
            )
        name = params.pop("name")
    if name not in _REGISTRY:
        discover_probes()
    if name not in _REGISTRY:
        raise ValueError(f"unknown probe '{name}'; known probes: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"probe '{name}' has no parameter {unknown}; its parameters: {allowed}")
    try:
        return TypeAdapter(cls).validate_python(params)
    except ValidationError as err:
        first = err.errors()[0]
        where = "".join(f"{p}: " for p in first["loc"][:1])
        problem = first["ctx"]["error"] if first["type"] == "value_error" else first["msg"]
        raise ValueError(f"probe '{name}': {where}{problem}") from None


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Remove colour: BT.601 luminance `0.299 R + 0.587 G + 0.114 B` in every channel."""
    weights = torch.tensor(LUMINANCE, dtype=images.dtype).reshape(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True).expand_as(images).contiguous()


def _fill(images: torch.Tensor, fill: float | str) -> torch.Tensor:
    """N x C x 1 x 1 fill values: each image's channel means (`"mean"`) or the constant."""
    if fill == "mean":
        return images.mean(dim=(2, 3), keepdim=True)
    return torch.full((*images.shape[:2], 1, 1), float(fill), dtype=images.dtype)


def _check_fill(fill: float | str) -> None:
    if fill != "mean" and not 0.0 <= float(fill) <= 1.0:
        raise ValueError("fill must be 'mean' or a value in [0, 1]")


def _radial_frequency(height: int, width: int) -> torch.Tensor:
    """H x W: |f| in cycles per pixel of each 2-D DFT coefficient (0 to sqrt(2) / 2)."""
    fy = torch.fft.fftfreq(height).reshape(-1, 1)
    fx = torch.fft.fftfreq(width).reshape(1, -1)
    return (fy**2 + fx**2).sqrt()


def _keep_frequencies(images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Ideal filter: zero the DFT coefficients outside `keep` (H x W, symmetric in f, so the
    result is real), clipped to [0, 1]."""
    spectrum = torch.fft.fft2(images.double())
    filtered = torch.fft.ifft2(spectrum * keep).real
    return filtered.clamp(0.0, 1.0).to(images.dtype)


def _check_cutoff(cutoff: float) -> None:
    if not 0.0 < cutoff <= 0.5:
        raise ValueError("cutoff must be in (0, 0.5] cycles per pixel")


@register_probe
@dataclass(frozen=True)
class Grayscale(Probe):
    name = "grayscale"
    description = "remove colour: BT.601 luminance in every channel"

    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        return grayscale(images)


@register_probe
@dataclass(frozen=True)
class Blur(Probe):
    """Gaussian low-pass, separable, kernel radius ceil(3 sigma), edges replicated."""

    name = "blur"
    description = "remove fine texture: Gaussian blur of standard deviation sigma pixels"
    sigma: float = 2.0

    def __post_init__(self) -> None:
        if self.sigma <= 0:
            raise ValueError("sigma must be > 0")

    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        radius = math.ceil(3 * self.sigma)
        x = torch.arange(-radius, radius + 1, dtype=images.dtype)
        kernel = torch.exp(-(x**2) / (2 * self.sigma**2))
        kernel = kernel / kernel.sum()
        channels = images.shape[1]
        padded = F.pad(images, (radius,) * 4, mode="replicate")
        across = kernel.reshape(1, 1, 1, -1).expand(channels, 1, 1, -1)
        down = kernel.reshape(1, 1, -1, 1).expand(channels, 1, -1, 1)
        return F.conv2d(F.conv2d(padded, across, groups=channels), down, groups=channels)


@register_probe
@dataclass(frozen=True)
class HighPassRemoval(Probe):
    name = "high_pass_removal"
    description = "remove spatial frequencies above cutoff cycles/pixel (FFT low-pass)"
    cutoff: float = 0.125

    def __post_init__(self) -> None:
        _check_cutoff(self.cutoff)

    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        radius = _radial_frequency(*images.shape[-2:])
        return _keep_frequencies(images, radius <= self.cutoff)


@register_probe
@dataclass(frozen=True)
class HighPassOnly(Probe):
    name = "high_pass_only"
    description = "keep only spatial frequencies above cutoff cycles/pixel and the mean (FFT)"
    cutoff: float = 0.125

    def __post_init__(self) -> None:
        _check_cutoff(self.cutoff)

    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        radius = _radial_frequency(*images.shape[-2:])
        return _keep_frequencies(images, (radius > self.cutoff) | (radius == 0))


@register_probe
@dataclass(frozen=True)
class Jpeg(Probe):
    """Each image quantised to 8 bits, JPEG-encoded at `quality` by Pillow, and decoded."""

    name = "jpeg"
    description = "remove compression-sensitive detail: JPEG re-compression at quality"
    quality: int = 30

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 95:
            raise ValueError("quality must be in [1, 95]")

    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        pixels = (images.clamp(0.0, 1.0) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        decoded = []
        for image in pixels:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=self.quality)
            buffer.seek(0)
            decoded.append(np.asarray(Image.open(buffer).convert("RGB")))
        return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(images.dtype) / 255


@register_probe
@dataclass(frozen=True)
class BorderMask(Probe):
    """A frame `round(width * H)` rows and `round(width * W)` columns deep (at least 1) set to
    the fill: each image's channel means, or a constant in [0, 1]."""

    name = "border_mask"
    description = "remove the image border: a frame of width (share of each side) filled"
    width: float = 0.125
    fill: float | Literal["mean"] = "mean"

    def __post_init__(self) -> None:
        if not 0.0 < self.width < 0.5:
            raise ValueError("width must be in (0, 0.5), a share of each side")
        _check_fill(self.fill)

    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        height, width = images.shape[-2:]
        dy, dx = max(1, round(self.width * height)), max(1, round(self.width * width))
        frame = torch.ones(height, width, dtype=torch.bool)
        frame[dy : height - dy, dx : width - dx] = False
        return torch.where(frame, _fill(images, self.fill), images)


@register_probe
@dataclass(frozen=True)
class BrightnessContrast(Probe):
    """`x' = mean + std * (x - m_i) / s_i` with `m_i`, `s_i` the mean and standard deviation of
    image i over its pixels and channels (colour relations kept), clipped to [0, 1]."""

    name = "brightness_contrast"
    description = "remove global brightness and contrast: every image to one mean and std"
    mean: float = 0.5
    std: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.mean <= 1.0 or self.std <= 0:
            raise ValueError("mean must be in [0, 1] and std > 0")

    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        flat = images.flatten(start_dim=1)
        shape = (-1,) + (1,) * (images.dim() - 1)
        m = flat.mean(dim=1).reshape(shape)
        s = flat.std(dim=1, unbiased=False).clamp(min=1e-6).reshape(shape)
        return (self.mean + self.std * (images - m) / s).clamp(0.0, 1.0)


@register_probe
@dataclass(frozen=True)
class PatchOcclusion(Probe):
    """Cell `cell` (row-major; rows `r * H // grid` to `(r + 1) * H // grid`, columns alike) set
    to the fill. Without a cell the probe is a scan: `auditor.audit.passes.OcclusionTask` occludes every cell in turn,
    and `place_probe` turns it into the probe of the cell with the largest effect."""

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
        _check_fill(self.fill)

    def cells(self) -> list[PatchOcclusion]:
        """The probe of every cell, row-major."""
        return [self.at(cell) for cell in range(self.grid**2)]

    def at(self, cell: int) -> PatchOcclusion:
        return replace(self, cell=cell)

    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        if self.cell is None:
            raise ValueError(
                "patch_occlusion without a cell scans the grid: use place_probe(), or set cell"
            )
        height, width = images.shape[-2:]
        row, col = divmod(self.cell, self.grid)
        out = images.clone()
        rows = slice(row * height // self.grid, (row + 1) * height // self.grid)
        cols = slice(col * width // self.grid, (col + 1) * width // self.grid)
        out[..., rows, cols] = _fill(images, self.fill)
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


def place_probe(
    probe: Probe, scan: Callable[[PatchOcclusion], OcclusionMap]
) -> tuple[Probe, OcclusionMap | None]:
    """The probe to run as one transform: a scanning `patch_occlusion` (no cell) becomes the
    occlusion of its worst cell in the map `scan(probe)` makes, returned with it; any other
    probe is returned as is."""
    if isinstance(probe, PatchOcclusion) and probe.cell is None:
        occlusion = scan(probe)
        return probe.at(occlusion.worst_cell), occlusion
    return probe, None


def change_norms(images: torch.Tensor, probed: torch.Tensor) -> torch.Tensor:
    """Per image, the L2 norm of the probe's change `||probed - images||`."""
    return (probed - images).flatten(start_dim=1).norm(dim=1)


def neutral_perturbation(images: torch.Tensor, size: torch.Tensor, seed: int) -> torch.Tensor:
    """Gaussian noise with, per image, the L2 norm `size` (the probe's change, from
    `change_norms`), clipped to [0, 1]: a perturbation of the same size that removes no
    particular cue."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    scale = size / noise.flatten(start_dim=1).norm(dim=1).clamp(min=1e-12)
    return (images + noise * scale.reshape(-1, 1, 1, 1)).clamp(0.0, 1.0)


def relative_drop(original: torch.Tensor, probed: torch.Tensor, channels: Sequence[int]) -> float:
    """Relative loss of the summed mean activation of a channel set under a probe,
    `(sum_c a_c - sum_c a'_c) / sum_c a_c`, clipped to [-1, 1] (1: silenced, 0: unchanged,
    -1: doubled or more). The clip keeps sets that are nearly silent on the original samples
    from dominating an average over random sets with huge negative values."""
    index = list(channels)
    before = float(original[index].sum())
    change = (before - float(probed[index].sum())) / max(abs(before), 1e-12)
    return min(1.0, max(-1.0, change))
