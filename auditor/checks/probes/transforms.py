"""The built-in probe transforms: each removes one cue (colour, texture, frequencies, compression
detail, border, global brightness and contrast) from N x 3 x H x W images in [0, 1]."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from auditor.checks.probes.base import PROBES, Probe

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Remove colour: BT.601 luminance `0.299 R + 0.587 G + 0.114 B` in every channel."""
    weights = torch.tensor(LUMINANCE, dtype=images.dtype).reshape(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True).expand_as(images).contiguous()


def fill_values(images: torch.Tensor, fill: float | str) -> torch.Tensor:
    """N x C x 1 x 1 fill values: each image's channel means (`"mean"`) or the constant."""
    if fill == "mean":
        return images.mean(dim=(2, 3), keepdim=True)
    return torch.full((*images.shape[:2], 1, 1), float(fill), dtype=images.dtype)


def check_fill(fill: float | str) -> None:
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


@PROBES.register("grayscale")
@dataclass(frozen=True)
class Grayscale(Probe):
    name = "grayscale"
    description = "remove colour: BT.601 luminance in every channel"

    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        return grayscale(images)


@PROBES.register("blur")
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


@PROBES.register("high_pass_removal")
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


@PROBES.register("high_pass_only")
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


@PROBES.register("jpeg")
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
        decoded = per_image(partial(jpeg_round_trip, quality=self.quality), pixels)
        return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(images.dtype) / 255


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """One H x W x 3 uint8 image JPEG-encoded at `quality` by Pillow and decoded."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


_POOL: ThreadPoolExecutor | None = None


def _forget_pool() -> None:
    """In a forked child the parent's pool threads do not exist: start a new pool there."""
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


def per_image(transform: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> list[np.ndarray]:
    """`transform` of every image of a batch, in order, on a thread pool of one thread per
    available core (Pillow releases the GIL while it encodes and decodes). Each image is
    transformed alone, so the result is the same as a loop, bit for bit."""
    global _POOL
    if len(images) < 2 or len(os.sched_getaffinity(0)) < 2:
        return [transform(image) for image in images]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(len(os.sched_getaffinity(0)), thread_name_prefix="auditor-probe")
    return list(_POOL.map(transform, images))


@PROBES.register("border_mask")
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
        check_fill(self.fill)

    def __call__(self, images: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        height, width = images.shape[-2:]
        dy, dx = max(1, round(self.width * height)), max(1, round(self.width * width))
        frame = torch.ones(height, width, dtype=torch.bool)
        frame[dy : height - dy, dx : width - dx] = False
        return torch.where(frame, fill_values(images, self.fill), images)


@PROBES.register("brightness_contrast")
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
