"""The groups of aten operations that the graph passes (layer search, LRP, SRD, APOP, receptive
fields) dispatch on, one named set each."""

from __future__ import annotations

import operator

import torch

aten = torch.ops.aten

CONV_OPS = frozenset({aten.conv2d.default, aten.convolution.default})
"""2-d convolutions: the layers an audit can be cut at, and SRD's weighted encoder steps."""

WEIGHTED_OPS = CONV_OPS | {aten.linear.default, aten.addmm.default}
"""Operations with learned weights (convolutions, dense layers and their decomposed `addmm`):
LRP applies the composite's rule to them, the receptive-field pass their positive twin."""

ADAPTIVE_AVG_POOL_OPS = frozenset(
    {aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default}
)
"""Adaptive average pooling, as exported and as decomposed."""

GLOBAL_POOL_OPS = ADAPTIVE_AVG_POOL_OPS | {aten.mean.dim, aten.flatten.using_ints}
"""Operations that collapse the spatial grid: where the encoder ends and the head begins."""

RESHAPE_OPS = frozenset(
    {
        aten.view.default, aten.reshape.default, aten._unsafe_view.default,
        aten.view_copy.default, aten._reshape_copy.default,
    }
)  # fmt: skip
"""Operations that only change a tensor's shape (as views and as their copying variants)."""

VIEW_OPS = RESHAPE_OPS | {
    aten.flatten.using_ints, aten.unflatten.int, aten.permute.default,
    aten.permute_copy.default, aten.t.default, aten.t_copy.default, aten.transpose.int,
    aten.transpose_copy.int, aten.clone.default, aten.contiguous.default, aten.alias.default,
    aten.alias_copy.default, aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims,
    aten.squeeze_copy.dim, aten.unsqueeze.default, aten.unsqueeze_copy.default,
    aten.expand.default, aten.expand_copy.default,
}  # fmt: skip
"""Operations that rearrange one tensor's values without computing (views, reshapes, copies):
transparent to every rule, relevance follows their gradient."""

ALIASING_OPS = VIEW_OPS - {
    aten.clone.default, aten.view_copy.default, aten._reshape_copy.default,
    aten.permute_copy.default, aten.t_copy.default, aten.transpose_copy.int,
    aten.alias_copy.default, aten.squeeze_copy.dim, aten.unsqueeze_copy.default,
    aten.expand_copy.default,
}  # fmt: skip
"""The `VIEW_OPS` whose output may share storage with their input (an in-place write to one
reaches the other); `reshape` and `contiguous` counted, as they may return a view."""

EVAL_DROPOUT_OPS = frozenset(
    {
        aten.dropout.default, aten.feature_dropout.default, aten.alpha_dropout.default,
        aten.feature_alpha_dropout.default,
    }
)  # fmt: skip
"""Dropout variants `(x, p, train)`: the identity when `train` is false, removed from the graph by
canonicalisation (`auditor.model.canonical`); a training-mode dropout keeps no rule."""

BATCH_NORM_OPS = frozenset({aten.batch_norm.default})
"""Inference BatchNorm in the form every graph is canonicalised to: folded into the convolution
feeding it, otherwise a per-channel affine layer."""

DECOMPOSED_BATCH_NORM_OPS = frozenset(
    {aten._native_batch_norm_legit_no_training.default, aten.native_batch_norm.default}
)
"""Decomposed BatchNorm (`run_decompositions`): a tuple whose item 0 is the normalised tensor;
canonicalisation rewrites it to `aten.batch_norm`."""

LAYER_NORM_OPS = frozenset({aten.layer_norm.default})
"""LayerNorm in the form every graph is canonicalised to (ConvNeXt normalises the channels of a
channels-last map): LRP's LN rule, the deviation held constant [Ali2022]."""

DECOMPOSED_LAYER_NORM_OPS = frozenset({aten.native_layer_norm.default})
"""Decomposed LayerNorm: a tuple whose item 0 is the normalised tensor; canonicalisation
rewrites it to `aten.layer_norm`."""

HEAD_START_OPS = GLOBAL_POOL_OPS | RESHAPE_OPS
"""Operations whose input is the encoder output (SRD's start of the classifier head)."""

REDISTRIBUTED_OPS = (
    ADAPTIVE_AVG_POOL_OPS
    | {aten.avg_pool2d.default, aten.mean.dim, aten.sum.dim_IntList}
    | BATCH_NORM_OPS
)
"""Averages, sums and an unfolded BatchNorm: LRP's epsilon rule gives each summand its
proportional share."""

SUM_OPS = frozenset({aten.add.Tensor, aten.sub.Tensor})
"""Elementwise sums (residual additions): LRP's epsilon rule over the summands."""

MATRIX_PRODUCT_OPS = frozenset({aten.matmul.default, aten.bmm.default, aten.mm.default})
"""Matrix products: bilinear in their two operands where both depend on the input (attention's
`q k^T` and `A v`)."""

PRODUCT_OPS = MATRIX_PRODUCT_OPS | {aten.mul.Tensor, aten.div.Tensor}
"""Products of tensors (gating, attention): LRP's signal-takes-all rule."""

SOFTMAX_OPS = frozenset({aten.softmax.int, aten._softmax.default})
"""Softmax: under a conservative composite it gates a product (its output is held constant,
[Ali2022]); under AttnLRP it gets the softmax rule [Achtibat2024]."""

LAYER_NORM_OPS = frozenset({aten.layer_norm.default})
"""LayerNorm over the last dimension(s) (token features): LRP's LayerNorm rule, the division by
the standard deviation held constant [Ali2022, Achtibat2024]."""

GATE_OPS = SOFTMAX_OPS | {aten.sigmoid.default, aten.hardsigmoid.default}
"""Operations whose output gates a product (squeeze-excitation's sigmoid / hardsigmoid,
attention's softmax): the operand LRP and SRD hold constant [Ali2022, Achtibat2024]."""

RELU_OPS = frozenset({aten.relu.default})
"""ReLU (in-place ReLU is canonicalised to it): APOP records and replaces it, guided
backpropagation rewrites its gradient."""

ACTIVATION_OPS = RELU_OPS | {
    aten.leaky_relu.default, aten.sigmoid.default, aten.tanh.default, aten.gelu.default,
    aten.silu.default, aten.hardswish.default, aten.hardtanh.default, aten.elu.default,
    aten.hardsigmoid.default,
}  # fmt: skip
"""Elementwise activations: relevance passes them unchanged (LRP's identity rule for SiLU,
GELU, hardswish and the others [Achtibat2024]), SRD relies on them being pointwise."""

POINTWISE_OPS = ACTIVATION_OPS | BATCH_NORM_OPS | {aten.neg.default}
"""Operations that map each unit to the unit at the same position: they keep its receptive
field."""

SHAPE_OPS = frozenset({aten.sym_size.int, aten.sym_numel.default, aten.sym_stride.int})
"""Reads of a tensor's shape (the batch size of a dynamic graph): no value flows through them."""

MAX_POOL_OPS = frozenset({aten.max_pool2d.default, aten.max_pool2d_with_indices.default})
"""Max pooling, with and without its indices: winner takes all."""

ROUTED_OPS = MAX_POOL_OPS | VIEW_OPS | {
    aten.cat.default, aten.slice.Tensor, aten.select.int, aten.stack.default,
    aten.unbind.int, aten.sym_size.int, operator.getitem,
}  # fmt: skip
"""Operations whose gradient routes values (max pooling, views and reshapes, concatenation,
slicing): relevance follows the gradient."""

MOVE_OPS = ROUTED_OPS - MAX_POOL_OPS - {aten.cat.default}
"""Operations that only move one tensor's values: LRP looks for a gate through them."""

BIAS_FREE_LINEAR_OPS = ROUTED_OPS | {aten.avg_pool2d.default}
"""Bias-free (piecewise) linear operations: SRD's gradient through them is their sharing-ratio
contraction (SRD eq. 12, 13)."""

LRP_RULE_OPS = (
    WEIGHTED_OPS | REDISTRIBUTED_OPS | SUM_OPS | PRODUCT_OPS | ACTIVATION_OPS | SOFTMAX_OPS
    | ROUTED_OPS | LAYER_NORM_OPS
)  # fmt: skip
"""Every operation LRP binds a rule to; an input-dependent operation outside it is refused."""
