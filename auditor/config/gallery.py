"""Which channels get a gallery and how its tiles are made."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from auditor.config.strict import StrictModel


class GallerySettings(StrictModel):
    """Channel galleries for the dashboard: per channel, the samples that activate it most
    [Zeiler2014], the input region where its relevance peaks [Chandrasegaran2022] and its
    channel-conditional relevance heatmap."""

    enabled: bool = True
    channels: Literal["top_k", "all_flagged"] = Field(
        default="all_flagged",
        description="top_k: the global top-k channels; all_flagged: also every analysed "
        "class's top-k and the channels each finding names",
    )
    samples_per_channel: int = Field(default=8, ge=1, le=64)
    thumbnail: int = Field(default=128, ge=16, le=1024, description="longest tile edge, pixels")
