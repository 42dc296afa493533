"""Channel galleries as files for the dashboard: PNG strips and a JSON manifest.

Per channel two strips, best sample first (left), one tile per sample, upscaled by
`thumbnail / max(H, W)` (nearest neighbour, so pixels stay crisp), `GAP` pixels apart:

* `channel_CCCC_samples.png`: the sample with the input region of its relevance peak outlined;
* `channel_CCCC_heatmaps.png`: the channel-conditional heatmap over the sample's luminance, each
  tile normalised by its own largest |relevance| (v in [-1, 1]): pixel = (1 - |v|) * gray +
  |v| * (red if v > 0 else blue), a red/blue diverging map; the same region outlined.

`manifest.json` describes the galleries (`manifest_dict`: also the report's gallery section);
`read_manifest` loads it back into the `GalleryResult` it was written from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from auditor.results import ArtefactRef, ChannelGallery, GalleryEntry, GalleryResult

GAP = 4
OUTLINE = (50, 205, 50)
BACKGROUND = (255, 255, 255)
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
#: BT.601 luminance weights (as the grayscale probe)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: channel-set names of the form FINDING_SET + index link a set to `AuditResult.findings`
FINDING_SET = "finding/"


def tile_size(height: int, width: int, thumbnail: int) -> tuple[int, int]:
    """(height, width) of one tile: the image scaled so that its longest edge is `thumbnail`."""
    scale = thumbnail / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def diverging(heatmap: np.ndarray, image: np.ndarray) -> np.ndarray:
    """H x W x 3 floats in [0, 1]: `heatmap` (H x W) in red (positive) / blue (negative) over
    the luminance of `image` (3 x H x W in [0, 1]), opacity |v| with v the heatmap divided by
    its largest absolute value."""
    gray = np.repeat(np.tensordot(LUMA, image, axes=1)[..., None], 3, axis=2)
    peak = float(np.abs(heatmap).max())
    v = heatmap / peak if peak > 0 else np.zeros_like(heatmap)
    colour = np.where((v > 0)[..., None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    weight = np.abs(v)[..., None]
    return (1 - weight) * gray + weight * colour


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)


def _tile(rgb: np.ndarray, box: Sequence[int], size: tuple[int, int]) -> Image.Image:
    """An H x W x 3 image in [0, 1] upscaled to `size` (height, width), `box` outlined."""
    height, width = rgb.shape[:2]
    tile = Image.fromarray(_to_uint8(rgb)).resize((size[1], size[0]), Image.Resampling.NEAREST)
    sy, sx = size[0] / height, size[1] / width
    top, left, bottom, right = box
    outline = [round(left * sx), round(top * sy), round(right * sx) - 1, round(bottom * sy) - 1]
    ImageDraw.Draw(tile).rectangle(outline, outline=OUTLINE, width=max(1, round(min(sx, sy))))
    return tile


def render_strip(
    images: Sequence[np.ndarray], boxes: Sequence[Sequence[int]], thumbnail: int
) -> Image.Image:
    """Tiles of H x W x 3 images in [0, 1] with their boxes, left to right, `GAP` apart."""
    height, width = images[0].shape[:2]
    th, tw = tile_size(height, width, thumbnail)
    strip = Image.new("RGB", (len(images) * tw + (len(images) + 1) * GAP, th + 2 * GAP), BACKGROUND)
    for index, (rgb, box) in enumerate(zip(images, boxes)):
        strip.paste(_tile(rgb, box, (th, tw)), (GAP + index * (tw + GAP), GAP))
    return strip


def write_channel_strips(
    directory: Path,
    channel: int,
    images: np.ndarray,
    heatmaps: np.ndarray,
    boxes: Sequence[Sequence[int]],
    thumbnail: int,
) -> tuple[str, str]:
    """Write a channel's two strips from its samples (n x 3 x H x W in [0, 1]) and heatmaps
    (n x H x W); returns their file names."""
    names = (f"channel_{channel:04d}_samples.png", f"channel_{channel:04d}_heatmaps.png")
    plain = [image.transpose(1, 2, 0) for image in images]
    overlaid = [diverging(h, image) for h, image in zip(heatmaps, images)]
    for name, tiles in zip(names, (plain, overlaid)):
        render_strip(tiles, boxes, thumbnail).save(directory / name, format="PNG")
    return names


def finding_index(set_name: str) -> int | None:
    """The finding a channel set illustrates, from its name (`finding/3` -> 3)."""
    if set_name.startswith(FINDING_SET):
        return int(set_name[len(FINDING_SET) :])
    return None


def gallery_artefacts(directory: Path, channels: Sequence[ChannelGallery], manifest: str) -> list[ArtefactRef]:
    """Every gallery file as an artefact: each strip linked to the first finding whose channel
    set holds its channel, the manifest to the whole audit."""
    refs = []
    for gallery in channels:
        linked = [i for i in map(finding_index, gallery.sets) if i is not None]
        finding = linked[0] if linked else None
        refs.append(ArtefactRef("gallery", str(directory / gallery.samples_image), finding))
        refs.append(ArtefactRef("heatmap", str(directory / gallery.heatmaps_image), finding))
    refs.append(ArtefactRef("gallery_manifest", str(directory / manifest)))
    return refs


def manifest_dict(result: GalleryResult) -> dict[str, Any]:
    """The manifest's content (file names relative to the gallery folder)."""
    return {
        "format_version": MANIFEST_VERSION,
        "layer": result.layer,
        "target": result.target,
        "channel_sets": result.channel_sets,
        "channels": [asdict(g) for g in result.channels],
    }


def write_manifest(result: GalleryResult) -> Path:
    path = Path(result.directory) / result.manifest
    path.write_text(json.dumps(manifest_dict(result), indent=2))
    return path


def read_manifest(path: str | Path) -> GalleryResult:
    """The `GalleryResult` a manifest describes, its files resolved next to it."""
    path = Path(path).resolve()
    data = json.loads(path.read_text())
    channels = [
        ChannelGallery(
            channel=g["channel"],
            sets=g["sets"],
            entries=[
                GalleryEntry(**{**e, "position": tuple(e["position"]), "box": tuple(e["box"])})
                for e in g["entries"]
            ],
            samples_image=g["samples_image"],
            heatmaps_image=g["heatmaps_image"],
        )
        for g in data["channels"]
    ]
    return GalleryResult(
        layer=data["layer"],
        target=data["target"],
        directory=str(path.parent),
        channel_sets=data["channel_sets"],
        channels=channels,
        artefacts=gallery_artefacts(path.parent, channels, path.name),
        manifest=path.name,
    )
