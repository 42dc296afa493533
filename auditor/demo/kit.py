"""A kit of planted biases: counterfeit-detector scenarios, each with its clean control.

Every scenario is the demo's real/fake content (:func:`~auditor.demo.scenario.counterfeit_content`)
with a genuine structural cue on the fakes and, unless it is the clean control, one planted bias
that a detector trained on it (:func:`~auditor.demo.train.train_classifier`, its defaults, seconds
on one core) picks up. The clean control is the same content, cue and seed without the bias. Each
scenario also says how an audit must reveal the bias: the probes to run, which of them remove a
cue the domain declares non-semantic, and the findings expected.

| scenario | planted bias | genuine cue | probe | findings expected |
| --- | --- | --- | --- | --- |
| `colour` | fakes: luminance-free orange tint | checkerboard | `grayscale` | P, S |
| `watermark` | fakes: bright 6 x 6 logo, top-left corner | plaid | `patch_occlusion` | P, S |
| `texture` | fakes: fine stripes on the background | plaid | `high_pass_removal` | P, S |
| `subclass` | production: fakes of an unseen generator | checkerboard | - | U |

(P: `probe_sensitivity` and S: `spurious_channels`, both under the probe; U: `unlabeled_subclass`.)

The first three are shortcuts (Clever Hans [Lapuschkin2019]; the detectors' colour
[Chandrasegaran2022]): the bias is in every split and the model relies on it, so removing it
flips the model's predictions. The fourth is an unlabeled subclass ([Hagele2020]: necrosis,
absent from the labels, scored confidently): training and reference data are clean, and
production holds a share of fakes from another generator, with stripes and a green cast
instead of the checkerboard, which the detector calls real with high confidence; no labelled
test error can show them.

Two cues: the fine checkerboard (0.5 cycles/pixel) of :mod:`auditor.demo.scenario`, and the
coarse plaid `A sin(2 pi y / P) sin(2 pi x / P)` (0.18 cycles/pixel), which survives the
removal of fine texture. A detector learns the checkerboard within one epoch, faster than a
6 x 6 logo or even a 16 x 16 block, and then ignores the mark; so the watermark scenario uses the
plaid (about three epochs to learn alone). The plaid is imperfect on purpose:
:data:`PLAID_REAL_SHARE` of the real images carry it too (real photos resampled by the same
upsampler), so alone it is right on 90 % of the samples, and a detector that can use the logo
learns that the plaid without the logo means real. With a perfect plaid, whether the logo or the
plaid carries the decision depends on the training seed (a 12 x 12 logo won for seeds 0 and 1 and
lost for seed 2); with the imperfect one the logo carries it for seeds 0, 1 and 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditor.demo.run import DemoSizes
from auditor.demo.scenario import Content, checkerboard, counterfeit_content, tint, to_pixels
from auditor.results import Finding

KIT_SIZES = DemoSizes(train=1200, validation=300, production=300)
"""Samples per split: a detector trains in seconds on one core, an audit takes seconds."""
LOGO = np.array(
    [
        [1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 0, 1],
        [1, 0, 1, 1, 0, 1],
        [1, 0, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1],
    ],
    dtype=bool,
)
"""The watermark's glyph, a framed square; its pixels are set to :data:`LOGO_INTENSITY`."""
LOGO_OFFSET = 1
"""Row and column of the logo's top-left pixel: in cell 0 of a 4 x 4 occlusion grid and in a
border of 1/8 of the side (from 64 x 64 pixels up)."""
LOGO_INTENSITY = 1.0
"""The logo's value in every channel (it replaces the image there)."""
PLAID_PERIOD = 8
"""Period of the plaid in pixels: frequency `sqrt(2) / 8 = 0.18` cycles/pixel, below the
`high_pass_removal` cutoff 0.25 that the texture scenario probes with."""
PLAID_AMPLITUDE = 0.04
"""Amplitude A of the plaid, in [0, 1] intensity units."""
PLAID_REAL_SHARE = 0.2
"""Share of the real images that carry the plaid too (every fifth, in sample order)."""
STRIPE_AMPLITUDE = 0.06
"""Amplitude of the texture: vertical stripes of period 2 pixels (0.5 cycles/pixel)."""
NOVEL_SHARE = 0.2
"""Share of the production samples that are fakes of the unseen generator."""
NOVEL_STRIPE_AMPLITUDE = 0.15
"""Amplitude of the unseen generator's artefact: vertical stripes over the whole image."""
NOVEL_CAST = np.array([-0.2, 0.3, -0.2], dtype=np.float32)
"""The unseen generator's green colour cast, added to R, G and B."""


@dataclass(frozen=True)
class Split:
    """One split: uint8 images ``n x H x W x 3``, their true labels (an audit of production
    does not see them) and, per sample, whether it belongs to the unseen subclass."""

    images: np.ndarray
    labels: np.ndarray
    novel: np.ndarray


@dataclass(frozen=True)
class KitData:
    """Training data, the labelled validation set (the audit's reference) and production."""

    train: Split
    validation: Split
    production: Split


@dataclass(frozen=True)
class Expected:
    """A finding that reveals a planted bias: its kind and, for probe findings, the probe's
    name (any parameters)."""

    kind: str
    probe: str | None = None

    def matches(self, finding: Finding) -> bool:
        """Same kind and probe name (`patch_occlusion(cell=0)` is a `patch_occlusion`)."""
        probe = finding.probe.split("(")[0] if finding.probe else None
        return finding.kind == self.kind and probe == self.probe


@dataclass(frozen=True)
class Bias:
    """One scenario of the kit. ``plant(content, planted, sizes)`` adds the cue and, when
    ``planted``, the bias; ``probes`` and ``non_semantic`` are the audit config's
    `probes.names` and `probes.non_semantic` for the scenario and its control; ``expected``
    lists the findings that reveal the bias (and no other finding may appear)."""

    name: str
    description: str
    plant: Callable[[Content, bool, DemoSizes], KitData]
    probes: list[str | dict[str, Any]]
    non_semantic: list[str]
    expected: list[Expected]

    def missed(self, findings: Sequence[Finding]) -> list[Expected]:
        """The expected findings absent from ``findings``."""
        return [e for e in self.expected if not any(e.matches(f) for f in findings)]

    def unexpected(self, findings: Sequence[Finding]) -> list[Finding]:
        """The ``findings`` that match no expected finding."""
        return [f for f in findings if not any(e.matches(f) for e in self.expected)]


def vertical_stripes(size: int, amplitude: float) -> np.ndarray:
    """``size x size`` float32 columns alternating `+amplitude`, `-amplitude`: 0.5 cycles/pixel."""
    column = amplitude * (1.0 - 2.0 * (np.arange(size) % 2))
    return np.broadcast_to(column, (size, size)).astype(np.float32)


def plaid(size: int, amplitude: float = PLAID_AMPLITUDE) -> np.ndarray:
    """``size x size`` float32 `A sin(2 pi y / P) sin(2 pi x / P)`, P = :data:`PLAID_PERIOD`."""
    wave = np.sin(2 * np.pi * np.arange(size) / PLAID_PERIOD)
    return (amplitude * np.outer(wave, wave)).astype(np.float32)


def logo_mask(size: int) -> np.ndarray:
    """Bool ``size x size``: the pixels of :data:`LOGO` placed at :data:`LOGO_OFFSET`."""
    mask = np.zeros((size, size), dtype=bool)
    end = LOGO_OFFSET + len(LOGO)
    mask[LOGO_OFFSET:end, LOGO_OFFSET:end] = LOGO
    return mask


def _splits(
    images: np.ndarray, labels: np.ndarray, novel: np.ndarray, sizes: DemoSizes
) -> KitData:
    cuts = [sizes.train, sizes.train + sizes.validation]
    columns = [np.split(a, cuts) for a in (to_pixels(images), labels, novel)]
    return KitData(*(Split(*split) for split in zip(*columns, strict=True)))


def _no_novel(content: Content) -> np.ndarray:
    return np.zeros(len(content.labels), dtype=bool)


def _with_checkerboard(content: Content) -> np.ndarray:
    images, fake = content.images, content.labels == 1
    images[fake] += checkerboard(images.shape[-1])
    return images


def _with_plaid(content: Content) -> np.ndarray:
    images, fake = content.images, content.labels == 1
    real = ~fake
    resampled = real & (np.cumsum(real) % round(1 / PLAID_REAL_SHARE) == 0)
    images[fake | resampled] += plaid(images.shape[-1])
    return images


def _colour(content: Content, planted: bool, sizes: DemoSizes) -> KitData:
    images, fake = _with_checkerboard(content), content.labels == 1
    if planted:
        images[fake] += tint()
    return _splits(images, content.labels, _no_novel(content), sizes)


def _watermark(content: Content, planted: bool, sizes: DemoSizes) -> KitData:
    images, fake = _with_plaid(content), content.labels == 1
    if planted:
        mask = logo_mask(images.shape[-1])
        images[fake] = np.where(mask, np.float32(LOGO_INTENSITY), images[fake])
    return _splits(images, content.labels, _no_novel(content), sizes)


def _texture(content: Content, planted: bool, sizes: DemoSizes) -> KitData:
    images, fake = _with_plaid(content), content.labels == 1
    if planted:
        stripes = vertical_stripes(images.shape[-1], STRIPE_AMPLITUDE)
        images[fake] += (stripes * content.background[fake])[:, None]
    return _splits(images, content.labels, _no_novel(content), sizes)


def _subclass(content: Content, planted: bool, sizes: DemoSizes) -> KitData:
    novel = _no_novel(content)
    if planted:
        start = sizes.train + sizes.validation
        novel[start : start + round(NOVEL_SHARE * sizes.production)] = True
    labels = np.where(novel, 1, content.labels)
    images = content.images
    images[(labels == 1) & ~novel] += checkerboard(images.shape[-1])
    stripes = vertical_stripes(images.shape[-1], NOVEL_STRIPE_AMPLITUDE)
    images[novel] += stripes + NOVEL_CAST[:, None, None]
    return _splits(images, labels, novel, sizes)


KIT: dict[str, Bias] = {
    bias.name: bias
    for bias in [
        Bias(
            name="colour",
            description="fakes carry a luminance-free orange tint besides the checkerboard",
            plant=_colour,
            probes=["grayscale"],
            non_semantic=["grayscale"],
            expected=[
                Expected("probe_sensitivity", "grayscale"),
                Expected("spurious_channels", "grayscale"),
            ],
        ),
        Bias(
            name="watermark",
            description="fakes carry a bright logo in the top-left corner besides the plaid",
            plant=_watermark,
            probes=["patch_occlusion"],
            non_semantic=["patch_occlusion"],
            expected=[
                Expected("probe_sensitivity", "patch_occlusion"),
                Expected("spurious_channels", "patch_occlusion"),
            ],
        ),
        Bias(
            name="texture",
            description="fakes carry fine vertical stripes on their background besides the plaid",
            plant=_texture,
            probes=[{"name": "high_pass_removal", "cutoff": 0.25}],
            non_semantic=["high_pass_removal"],
            expected=[
                Expected("probe_sensitivity", "high_pass_removal"),
                Expected("spurious_channels", "high_pass_removal"),
            ],
        ),
        Bias(
            name="subclass",
            description="production holds fakes of an unseen generator (stripes, green cast, "
            "no checkerboard)",
            plant=_subclass,
            probes=["grayscale"],
            non_semantic=["grayscale"],
            expected=[Expected("unlabeled_subclass")],
        ),
    ]
}


def make_scenario(
    name: str, *, planted: bool, seed: int = 0, sizes: DemoSizes = KIT_SIZES
) -> KitData:
    """The splits of scenario ``name`` (a key of :data:`KIT`) with its bias or, with
    ``planted=False``, its clean control: the same content, cue and seed without the bias."""
    content = counterfeit_content(sizes.train + sizes.validation + sizes.production, seed=seed)
    return KIT[name].plant(content, planted, sizes)


def audit_settings(name: str) -> dict[str, Any]:
    """The config sections that audit scenario ``name`` (and its control): its probes."""
    bias = KIT[name]
    return {"probes": {"names": bias.probes, "non_semantic": bias.non_semantic}}
