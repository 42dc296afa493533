"""The built-in families of the zoo, registered in `FAMILIES`."""

from __future__ import annotations

from tests.families import Family, register
from tests.families.convnext import convnext
from tests.families.densenet import densenet
from tests.families.efficientnet import efficientnet_b0
from tests.families.mobilenet import mobilenet_v2, mobilenet_v3_small
from tests.families.resnet import resnet18, resnet50
from tests.families.vgg import vgg11_bn

register(Family("resnet18", resnet18, "layer4"))
register(Family("resnet50", resnet50, "layer4"))
register(Family("vgg11_bn", vgg11_bn, "features"))
register(Family("mobilenet_v2", mobilenet_v2, "features"))
register(Family("mobilenet_v3_small", mobilenet_v3_small, "features"))
register(Family("efficientnet_b0", efficientnet_b0, "features"))
register(Family("densenet", densenet, "features"))
#: SRD's pointwise feature vectors are channel vectors of N x C x H x W maps; ConvNeXt's blocks
#: compute on channels-last maps (LayerNorm, Linear), where SRD has no rule
register(Family("convnext", convnext, "features", refused={"srd": "aten.layer_norm.default"}))
