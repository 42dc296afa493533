"""The channel-gallery stage of an audit: what a flagged channel looks at (the dataset samples that activate
a feature map most [Zeiler2014]; the relevant channels visualised where their relevance
peaks [Chandrasegaran2022]).

For each channel c of the audited layer:

* its top samples by activation [Zeiler2014]: `s_c(x) = sum_hw max(0, z[c, h, w](x))`, in
  descending order (ties: sample order), kept for every channel while the relevance pass
  streams (`auditor.execution.sketches.TopRows`) -- what the channel responds to in this data;
* for each such sample, where the channel's evidence for the decision lies ([Chandrasegaran2022]:
  `(h*, w*) = argmax_hw R_i[0, c, h, w]` and the region in input space corresponding to
  `(h*, w*)`): `R_i` is the LRP relevance at the layer for the audit's explained class
  (`relevance.target`: predicted class, or label where known), recomputed through the head for
  the gallery samples only; the region is the receptive field of `(h*, w*)`
  (`auditor.model.receptive_field`). Where channel c holds no positive relevance for the sample (the
  model did not use it for that decision) its activation's argmax locates the region instead.
  At a token layer (`auditor.model.tokens`) the maps are the patch tokens on their grid and the
  region is the patch of the peak token;
* its channel-conditional input heatmap: the layer relevance with every other channel zeroed,
  `R_i[c', h, w] * [c' = c]`, propagated through the trunk to the image with the same LRP
  composite (`LRP.attribute_from`) and summed over colour channels -- the pixels that carry
  channel c's share of the decision (concept-conditional relevance, as in Achtibat et al.,
  "From attribution maps to human-understandable explanations through Concept Relevance
  Propagation", 2023).

Samples are thus ranked by activation, and located and explained by relevance. Only the
gallery samples get extra passes: one trunk and head pass for their activations and layer
relevance, and one trunk pass per (channel, sample) pair, both batched. The PNG strips and the
manifest are written by `auditor.artefacts.gallery`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from auditor.artefacts.gallery import ChannelEvidence, write_galleries
from auditor.artefacts.gallery_files import FINDING_SET
from auditor.audit.passes import RelevancePass
from auditor.config import AuditConfig
from auditor.data.samples import SampleSet, normalize
from auditor.evidence import FINDING_KINDS
from auditor.execution.progress import sample_bar
from auditor.model.graph import SplitModel
from auditor.model.receptive_field import Box, receptive_fields
from auditor.model.tokens import TOKEN_RANK, patch_box, patch_grid
from auditor.relevance import LRP, Composite
from auditor.results import ChannelTable, ClassAnalysis, Finding, GalleryEntry, GalleryResult


def peak_positions(
    relevance: torch.Tensor, activation: torch.Tensor
) -> list[tuple[tuple[int, int], str]]:
    """Per map of M x h x w channel maps: ((h*, w*), located_by), the argmax of the relevance
    map where it has a positive value ("relevance"), else of the activation ("activation")."""
    peaks = []
    for r, z in zip(relevance, activation):
        source, name = (r, "relevance") if bool((r > 0).any()) else (z, "activation")
        h, w = divmod(int(source.flatten().argmax()), source.shape[1])
        peaks.append(((h, w), name))
    return peaks


def located_regions(
    split: SplitModel,
    image_shape: tuple[int, ...],
    maps: torch.Tensor,
    activation: torch.Tensor,
    channels: Sequence[int],
    batch_size: int,
) -> tuple[list[Box], list[tuple[tuple[int, int], str]]]:
    """Per channel map (M x h x w, or M x T at a token layer): the input region of its peak and
    the peak (`peak_positions`); the receptive field of the peak unit, or at a token layer the
    patch of the peak token on the patch grid."""
    if maps.dim() == TOKEN_RANK - 1:
        grid = patch_grid(maps)
        peaks = peak_positions(grid, patch_grid(activation))
        return [patch_box(p, grid.shape[-1], image_shape[1:]) for p, _ in peaks], peaks
    peaks = peak_positions(maps, activation)
    positions = [(c, *position) for c, (position, _) in zip(channels, peaks)]
    return receptive_fields(split.trunk, image_shape, positions, batch_size), peaks


def gallery_channel_sets(
    channels: ChannelTable, classes: Sequence[ClassAnalysis], findings: Sequence[Finding], mode: str
) -> dict[str, list[int]]:
    """The channel sets to show: `global` (the global top-k); with mode `all_flagged` also
    `class/<name>` (each analysed class's top-k) and `finding/<i>` (the channels finding i
    names in its evidence, linking the gallery to that finding)."""
    sets = {"global": list(channels.top_k)}
    if mode == "all_flagged":
        sets.update({f"class/{c.class_name}": list(c.top_k) for c in classes})
        named = [FINDING_KINDS.get(f.kind).channels(f.evidence) for f in findings]
        sets.update({f"{FINDING_SET}{i}": c for i, c in enumerate(named) if c})
    return sets


def layer_relevance(
    head_lrp: LRP, activations: torch.Tensor, targets: torch.Tensor | None, batch_size: int
) -> torch.Tensor:
    """Relevance at the layer (N x C x h x w) for the explained class, through the head."""
    chunks = []
    for start in range(0, len(activations), batch_size):
        target = None if targets is None else targets[start : start + batch_size]
        chunks.append(head_lrp.attribute_with_logits(activations[start : start + batch_size], target)[0])
    return torch.cat(chunks)


def channel_heatmaps(
    trunk_lrp: LRP,
    images: torch.Tensor,
    relevance: torch.Tensor,
    channels: Sequence[int],
    batch_size: int,
    advance: Callable[[int], None] = lambda _n: None,
) -> np.ndarray:
    """M x H x W input heatmaps: pair m propagates only channel `channels[m]` of the layer
    relevance `relevance[m]` (C x h x w) through the trunk, for normalised image `images[m]`;
    `advance(n)` is called after each chunk of n pairs (a progress bar)."""
    maps = []
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        kept = torch.zeros_like(relevance[start:stop])
        rows = torch.arange(len(kept))
        picked = torch.as_tensor(channels[start:stop])
        kept[rows, picked] = relevance[start:stop][rows, picked]
        maps.append(trunk_lrp.attribute_from(images[start:stop], kept).sum(dim=1))
        advance(len(kept))
    return torch.cat(maps).numpy()


def channel_galleries(
    split: SplitModel,
    samples: SampleSet,
    base: RelevancePass,
    channel_sets: dict[str, list[int]],
    config: AuditConfig,
    artifact_dir: str | Path,
    lrp_rules: Composite,
) -> GalleryResult:
    """Galleries of every channel in `channel_sets`: their passes, then their files under
    `artifact_dir/gallery/` with the manifest."""
    channels = sorted({int(c) for members in channel_sets.values() for c in members})
    evidence = (
        gallery_evidence(split, samples, base, channels, channel_sets, config, lrp_rules)
        if channels
        else []
    )
    return write_galleries(
        split.layer, config.relevance.target, channel_sets, evidence, Path(artifact_dir),
        config.gallery.thumbnail,
    )


def gallery_evidence(
    split: SplitModel,
    samples: SampleSet,
    base: RelevancePass,
    channels: list[int],
    channel_sets: dict[str, list[int]],
    config: AuditConfig,
    lrp_rules: Composite,
) -> list[ChannelEvidence]:
    """Rank, locate and explain each of `channels` (see the module docstring)."""
    top = base.top_activations
    n = min(config.gallery.samples_per_channel, top.m)
    score = {(c, int(i)): float(v) for c in channels for i, v in zip(*top.top(c))}
    pairs = [(c, int(i)) for c in channels for i in top.top(c)[0][:n]]
    shown = sorted({i for _, i in pairs})
    targets = None
    if config.relevance.target == "label":
        targets = torch.from_numpy(samples.labels[shown])
    shown_images = torch.from_numpy(samples.images[shown])  # the only images read again
    with torch.no_grad(), sample_bar("gallery samples", len(shown)) as advance:
        chunks = []
        for chunk in shown_images.split(config.batch_size):
            chunks.append(split.trunk(normalize(chunk, config.preprocess)))
            advance(len(chunk))
        activations = torch.cat(chunks)
    relevance = layer_relevance(LRP(split.head, lrp_rules), activations, targets, config.batch_size)

    rows = [shown.index(i) for _, i in pairs]
    pair_channels = [c for c, _ in pairs]
    maps = relevance[rows, pair_channels]
    boxes, peaks = located_regions(
        split, samples.images.shape[1:], maps, activations[rows, pair_channels], pair_channels,
        config.batch_size,
    )  # fmt: skip
    images = shown_images[rows].numpy()
    with sample_bar("gallery heatmaps", len(pairs), unit="maps") as advance:
        heatmaps = channel_heatmaps(
            LRP(split.trunk, lrp_rules),
            normalize(torch.from_numpy(images), config.preprocess),
            relevance[rows],
            pair_channels,
            config.batch_size,
            advance,
        )

    evidence = []
    for c in channels:
        index = [m for m, channel in enumerate(pair_channels) if channel == c]
        entries = [
            GalleryEntry(
                sample_index=pairs[m][1],
                sample_id=samples.ids[pairs[m][1]],
                score=score[(c, pairs[m][1])],
                relevance=float(maps[m].sum()),
                position=peaks[m][0],
                located_by=peaks[m][1],
                box=boxes[m],
            )
            for m in index
        ]
        evidence.append(
            ChannelEvidence(
                channel=c,
                sets=[name for name, members in channel_sets.items() if c in members],
                entries=entries,
                images=images[index],
                heatmaps=heatmaps[index],
            )
        )
    return evidence
