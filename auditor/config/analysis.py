"""How samples are measured: preprocessing, relevance, channel ranking, dropout, probes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from auditor.config.strict import StrictModel


class Preprocess(StrictModel):
    """How raw images become model inputs: resize, scale to [0, 1], convert to the model's
    channels and channel order, normalise."""

    size: tuple[int, int] | None = Field(default=None, description="(height, width) to resize to")
    channels: Literal[1, 3] | None = Field(
        default=None,
        description="channels the model takes: 1 converts samples to grayscale (BT.601 "
        "luminance); default: the model's declared input channels, else 3",
    )
    channel_order: Literal["rgb", "bgr"] = Field(
        default="rgb", description="bgr reverses the channels (models trained on OpenCV images)"
    )
    mean: tuple[float, ...] = Field(default=(0.0, 0.0, 0.0), min_length=1, max_length=3)
    std: tuple[float, ...] = Field(default=(1.0, 1.0, 1.0), min_length=1, max_length=3)

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: tuple[float, ...]) -> tuple[float, ...]:
        if any(s <= 0 for s in std):
            raise ValueError("every std must be > 0")
        return std

    @model_validator(mode="after")
    def _one_value_per_channel(self) -> Preprocess:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) == 2:
                raise ValueError(f"preprocess.{name} takes 1 value (any channels) or 3 (per channel)")
            if self.channels == 1 and len(set(values)) > 1:
                raise ValueError(
                    f"preprocess.{name} has per-channel values {list(values)} for a 1-channel model"
                )
        return self


def _lrp_composite(name: str) -> str:
    # imported on use: the LRP rules pull in torch, the config alone does not
    from auditor.relevance.composites import COMPOSITES

    COMPOSITES.get(name)  # unknown name: UnknownExtensionError (a ValueError) naming the known
    return name


LrpComposite = Annotated[str, AfterValidator(_lrp_composite)]


class RelevanceSettings(StrictModel):
    """Per-channel relevance at the audited layer [Chandrasegaran2022]."""

    method: Literal["lrp"] = "lrp"
    composite: LrpComposite = Field(
        default="epsilon_plus", description="any registered LRP composite (built-in or plug-in)"
    )
    epsilon: float = Field(default=1e-6, gt=0)
    target: Literal["predicted", "label"] = Field(
        default="predicted",
        description="class explained: predicted class, or the label where known",
    )


class ChannelSettings(StrictModel):
    """How many channels are ranked as top-k."""

    top_k: int | None = Field(default=None, ge=1, description="fixed k; default: top_k_fraction")
    top_k_fraction: float = Field(default=0.2, gt=0, le=0.5)
    min_class_samples: int = Field(
        default=20, ge=1, description="per-class analysis for classes predicted this often"
    )


class DropoutSettings(StrictModel):
    """Top-k vs random-k vs bottom-k channel dropout ([Chandrasegaran2022]: 5 random repeats,
    averaged; here as many as the stated false-alarm rate needs)."""

    random_repeats: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="random-k sets per dropout; default: enough that the smallest empirical "
        "p-value, 1 / (sets + 1), is half of Holm's smallest level over the audit's tests "
        "(2 x tests / false_alarm_rate - 1, at least 19)",
    )
    dose_response_fractions: list[Annotated[float, Field(gt=0, le=0.5)]] = Field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5],
        description="shares of the layer's channels dropped along the dose-response curve "
        "(top-k vs random-k vs bottom-k per k); [] turns it off",
    )
    dose_response_random_repeats: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="random-k sets per k of the dose-response; the empirical p-value is at "
        "least 1 / (repeats + 1), so 19 or more are needed for p <= 0.05",
    )
    bootstrap_replicates: int = Field(
        default=1000, ge=100, le=100_000, description="bootstrap replicates over samples"
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="level of the bootstrap confidence intervals"
    )


def _probe_entry(entry: str | dict[str, Any]) -> str | dict[str, Any]:
    # imported on use: the probe library pulls in torch, the config alone does not
    from auditor.checks.probes.base import build_probe

    build_probe(entry)  # unknown probe, unknown parameter or invalid value: ValueError
    return entry


ProbeEntry = Annotated[str | dict[str, Any], AfterValidator(_probe_entry)]
ProbeName = Annotated[str, AfterValidator(_probe_entry)]


class ProbeSettings(StrictModel):
    """Probes that remove one candidate cue; `non_semantic` cues may not carry the decision.
    Any registered probe (built-in or plug-in, see `auditor.checks.probes`) by name, or with
    parameters: `{name: blur, sigma: 2.0}`."""

    names: list[ProbeEntry] = Field(default_factory=lambda: ["grayscale"])
    non_semantic: list[ProbeName] = Field(
        default_factory=lambda: ["grayscale"],
        description="probes whose cue the domain declares irrelevant to the label (colour "
        "here), by name: they cover every entry of that probe in `names`",
    )
    null_channel_sets: int = Field(
        default=9999,
        ge=19,
        le=1_000_000,
        description="random channel sets of the null of a class's activation shift under a "
        "probe (no model pass: drawn from per-channel shifts); the p-value is at least "
        "1 / (sets + 1)",
    )

    @model_validator(mode="after")
    def _distinct_probes(self) -> ProbeSettings:
        from auditor.checks.probes.base import build_probe

        labels = [build_probe(entry).label for entry in self.names]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"probes listed twice with the same parameters: {twice}")
        return self
