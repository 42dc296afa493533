"""The files of an audit's channel galleries: per channel a strip of its top samples with their
located regions and a strip of its channel-conditional heatmaps (PNG), and the manifest that
lists them (`auditor.artefacts.gallery_files`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from auditor.artefacts.gallery_files import (
    MANIFEST,
    gallery_artefacts,
    write_channel_strips,
    write_manifest,
)
from auditor.results import ChannelGallery, GalleryEntry, GalleryResult


@dataclass(frozen=True)
class ChannelEvidence:
    """What one channel's gallery shows: the channel sets it belongs to, its entries, and per
    entry the image (3 x H x W in [0, 1]) and the channel-conditional heatmap (H x W)."""

    channel: int
    sets: list[str]
    entries: list[GalleryEntry]
    images: np.ndarray
    heatmaps: np.ndarray


def write_galleries(
    layer: str,
    target: str,
    channel_sets: dict[str, list[int]],
    evidence: list[ChannelEvidence],
    artifact_dir: Path,
    thumbnail: int,
) -> GalleryResult:
    """Write each channel's strips (tiles of at most `thumbnail` pixels) under
    `artifact_dir/gallery/`, and the manifest of them all."""
    directory = artifact_dir.resolve() / "gallery"
    directory.mkdir(parents=True, exist_ok=True)
    galleries = []
    for channel in evidence:
        samples_image, heatmaps_image = write_channel_strips(
            directory, channel.channel, channel.images, channel.heatmaps,
            [e.box for e in channel.entries], thumbnail,
        )
        galleries.append(
            ChannelGallery(
                channel=channel.channel,
                sets=channel.sets,
                entries=channel.entries,
                samples_image=samples_image,
                heatmaps_image=heatmaps_image,
            )
        )
    result = GalleryResult(
        layer=layer,
        target=target,
        directory=str(directory),
        channel_sets={name: [int(c) for c in members] for name, members in channel_sets.items()},
        channels=galleries,
        artefacts=gallery_artefacts(directory, galleries, MANIFEST),
    )
    write_manifest(result)
    return result
