"""The ONNX operators the importer translates, each mapped to its converter."""

from __future__ import annotations

from auditor.model.onnx import conv_ops, dense_ops, shape_arith, shape_ops
from auditor.model.onnx.translator import Converter

CONVERTERS: dict[str, Converter] = {
    "Conv": conv_ops.conv,
    "BatchNormalization": dense_ops.batch_norm,
    "Relu": dense_ops.relu,
    "LeakyRelu": dense_ops.leaky_relu,
    "Sigmoid": dense_ops.sigmoid,
    "Clip": dense_ops.clip,
    "HardSwish": dense_ops.hardswish,
    "HardSigmoid": dense_ops.hard_sigmoid,
    "LayerNormalization": dense_ops.layer_norm,
    "Erf": dense_ops.erf,
    "Gelu": dense_ops.gelu,
    "MaxPool": conv_ops.max_pool,
    "AveragePool": conv_ops.average_pool,
    "GlobalAveragePool": conv_ops.global_average_pool,
    "ReduceMean": conv_ops.reduce_mean,
    "Gemm": dense_ops.gemm,
    "MatMul": dense_ops.matmul,
    "Add": dense_ops.add,
    "Mul": dense_ops.mul,
    "Concat": shape_ops.concat,
    "Flatten": shape_ops.flatten,
    "Reshape": shape_ops.reshape,
    "Transpose": shape_ops.transpose,
    "Softmax": shape_ops.softmax,
    "Identity": dense_ops.identity,
    "Dropout": dense_ops.identity,
    "Constant": dense_ops.constant,
    "Shape": shape_arith.shape,
    "Gather": shape_arith.gather,
    "Slice": shape_arith.slice_,
    "Unsqueeze": shape_arith.unsqueeze,
    "Squeeze": shape_arith.squeeze,
    "Cast": shape_arith.cast,
    "Div": shape_arith.div,
    "Sub": shape_arith.sub,
}
