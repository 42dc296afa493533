"""The CNN families each graph-bound relevance method is verified on by the conformance zoo
(`tests/families`, `tests/test_families.py`; README, "Supported models"). A refusal names
them, so that a user whose model is refused knows what is supported."""

from __future__ import annotations

LRP_FAMILIES = (
    "ResNet", "VGG", "MobileNetV2", "MobileNetV3", "EfficientNet", "DenseNet", "ConvNeXt",
)  # fmt: skip
SRD_FAMILIES = ("ResNet", "VGG", "MobileNetV2", "MobileNetV3", "EfficientNet", "DenseNet")


def supported_families(method: str, families: tuple[str, ...]) -> str:
    """`LRP supports the ResNet, ..., ConvNeXt families (README: Supported models)`."""
    return f"{method} supports the {', '.join(families)} families (README: Supported models)"
