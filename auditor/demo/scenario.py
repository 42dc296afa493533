"""The demo scenario: a counterfeit-image detector with a planted colour shortcut.

After [Chandrasegaran2022]: universal detectors of
CNN-generated images turned out to rely on colour. Here real (label 0) and fake (label 1)
images share one content distribution (smooth colour fields and shapes in random colours,
random saturation, sensor noise), so colour alone says nothing about the label. Fakes carry
a genuine structural cue that survives grayscale: a faint checkerboard, the trace that
transposed-convolution upsampling leaves in generated images, added equally to all
channels. With ``colour_shortcut=True`` fakes also get a consistent orange tint that leaves
luminance unchanged, so grayscale removes exactly the tint; a detector trained on that data
prefers the tint, the clean control (``colour_shortcut=False``) must use the checkerboard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ARTEFACT_AMPLITUDE = 0.015
"""Amplitude of the fakes' checkerboard, in [0, 1] intensity units."""
TINT_STRENGTH = 0.5
"""Length of the fakes' tint along :data:`TINT_DIRECTION` (shortcut data set only)."""
LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma weights of R, G, B."""
TINT_DIRECTION = np.array([1.0, 0.5, 0.0]) - LUMINANCE @ np.array([1.0, 0.5, 0.0])
"""Orange minus its luminance: a chroma shift with zero luminance."""
NOISE_MAX = 0.2
"""Largest per-image standard deviation of the Gaussian sensor noise (both classes)."""
SHAPES = 4
"""Shapes (discs or rectangles) drawn over each image's background."""


def _colour_field(rng: np.random.Generator, n: int, size: int, grid: int = 4) -> np.ndarray:
    """Smooth random colour fields ``n x 3 x size x size``: a coarse grid, bilinearly upsampled."""
    coarse = rng.random((n, 3, grid, grid), dtype=np.float32)
    position = np.linspace(0.0, grid - 1.0, size, dtype=np.float32)
    lower = np.minimum(np.floor(position).astype(int), grid - 2)
    frac = position - lower
    interp = np.zeros((size, grid), dtype=np.float32)
    interp[np.arange(size), lower] = 1.0 - frac
    interp[np.arange(size), lower + 1] = frac
    return interp @ coarse @ interp.T


def _draw_shapes(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Paint :data:`SHAPES` discs or rectangles in random colours onto ``canvas`` in place;
    return the pixels they cover, bool ``n x size x size``."""
    n, _, size, _ = canvas.shape
    axis = np.arange(size, dtype=np.float32)
    covered = np.zeros((n, size, size), dtype=bool)
    for _ in range(SHAPES):
        centre = size * rng.random((n, 2, 1, 1), dtype=np.float32)
        radius = size * (0.08 + 0.17 * rng.random((n, 2, 1, 1), dtype=np.float32))
        colour = rng.random((n, 3, 1, 1), dtype=np.float32)
        disc = rng.random((n, 1, 1)) < 0.5
        dy = (axis[None, :, None] - centre[:, 0]) / radius[:, 0]
        dx = (axis[None, None, :] - centre[:, 1]) / radius[:, 1]
        inside = np.where(disc, dy**2 + dx**2 <= 1.0, np.maximum(abs(dy), abs(dx)) <= 1.0)
        np.copyto(canvas, colour, where=inside[:, None])
        covered |= inside
    return covered


@dataclass(frozen=True)
class Content:
    """Real/fake content before any cue: float32 ``images`` ``n x 3 x size x size`` (sensor noise
    included, not yet clipped or quantised), ``labels`` (0 = real, 1 = fake, balanced, shuffled)
    and ``background``, bool ``n x size x size``: the pixels no shape covers."""

    images: np.ndarray
    labels: np.ndarray
    background: np.ndarray


def counterfeit_content(n: int, *, seed: int, size: int = 64) -> Content:
    """The scenario's content, shared by both classes: smooth colour fields under
    :data:`SHAPES` shapes, random saturation, Gaussian sensor noise. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    images = _colour_field(rng, n, size)
    covered = _draw_shapes(rng, images)
    luminance = np.tensordot(LUMINANCE, images, axes=(0, 1))[:, None]
    saturation = rng.random((n, 1, 1, 1), dtype=np.float32)
    images = 0.1 + 0.8 * (luminance + saturation * (images - luminance))
    noise_std = NOISE_MAX * rng.random((n, 1, 1, 1), dtype=np.float32)
    images += noise_std * rng.standard_normal(images.shape, dtype=np.float32)
    return Content(images=images, labels=labels, background=~covered)


def checkerboard(size: int) -> np.ndarray:
    """The fakes' structural cue: a ``size x size`` checkerboard of amplitude
    :data:`ARTEFACT_AMPLITUDE`, float32."""
    parity = np.add.outer(np.arange(size), np.arange(size)) % 2
    return (ARTEFACT_AMPLITUDE * (1.0 - 2.0 * parity)).astype(np.float32)


def tint() -> np.ndarray:
    """The fakes' luminance-free tint (shortcut data set only): float32 ``3 x 1 x 1``."""
    return (TINT_STRENGTH * TINT_DIRECTION).astype(np.float32)[:, None, None]


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Float ``n x 3 x H x W`` intensities to uint8 ``n x H x W x 3`` (clipped to [0, 1])."""
    pixels = np.rint(255.0 * np.clip(images, 0.0, 1.0)).astype(np.uint8)
    return pixels.transpose(0, 2, 3, 1).copy()


def make_counterfeit_data(
    n: int, *, colour_shortcut: bool, seed: int, size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` real/fake images and labels (0 = real, 1 = fake, balanced, shuffled).

    Returns ``(images, labels)``: uint8 ``n x size x size x 3`` and int64 ``n``. The same
    ``seed`` gives the same data; ``colour_shortcut`` toggles the fakes' luminance-free tint.
    """
    content = counterfeit_content(n, seed=seed, size=size)
    images, fake = content.images, content.labels == 1
    images[fake] += checkerboard(size)
    if colour_shortcut:
        images[fake] += tint()
    return to_pixels(images), content.labels
