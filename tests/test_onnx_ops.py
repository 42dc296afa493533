"""ONNX operators of other toolchains: each imported graph checked against ONNX Runtime; shape
arithmetic folded for the audited input size; graphs without module paths addressed by node
name; symbolic image sizes given by `preprocess.size`."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from auditor.errors import LayerNotFoundError, ModelLoadError
from auditor.model.graph import ModelGraph
from auditor.model.onnx import import_onnx, load_onnx
from auditor.relevance.composites import composite
from auditor.relevance.lrp import LRP

torch.set_num_threads(1)
make = helper.make_node
SHAPE = [4, 6, 6]  # C x H x W of the hand-built graphs


def _weight(name: str, shape: tuple[int, ...], seed: int = 0) -> TensorProto:
    rng = np.random.default_rng(zlib.crc32(name.encode()) + seed)  # str hash varies per process
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)


def _ints(name: str, values: list[int]) -> TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _model(nodes: list, initializers: list, out_rank: int, opset: int = 17, dims=None) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims or ["N", *SHAPE])]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(out_rank)])
    graph = helper.make_graph(nodes, "ops", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model)
    return model


# one case per operator: (nodes, initializers); "x" is N x 4 x 6 x 6, the result "y"
CASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "Gemm": lambda: _model(
        [make("Flatten", ["x"], ["f"]), make("Gemm", ["f", "w", "b"], ["y"], transB=1, alpha=0.7, beta=1.5)],
        [_weight("w", (5, 144)), _weight("b", (5,))], 2,
    ),
    "MatMul": lambda: _model([make("MatMul", ["x", "w"], ["y"])], [_weight("w", (6, 3))], 4),
    "Softmax": lambda: _model([make("Softmax", ["x"], ["y"], axis=1)], [], 4),
    "LayerNormalization": lambda: _model(
        [make("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
         make("LayerNormalization", ["t", "s", "b"], ["y"], axis=-1, epsilon=1e-5)],
        [_weight("s", (4,)), _weight("b", (4,))], 4,
    ),
    "HardSwish": lambda: _model([make("HardSwish", ["x"], ["y"])], [], 4),
    "HardSigmoid_torch": lambda: _model(
        [make("HardSigmoid", ["x"], ["y"], alpha=1 / 6, beta=0.5)], [], 4
    ),
    "HardSigmoid_onnx_default": lambda: _model([make("HardSigmoid", ["x"], ["y"])], [], 4),
    "Sigmoid": lambda: _model([make("Sigmoid", ["x"], ["y"])], [], 4),
    "Mul": lambda: _model(
        [make("Sigmoid", ["x"], ["g"]), make("Mul", ["x", "g"], ["m"]), make("Mul", ["m", "c"], ["y"])],
        [_weight("c", (1, 4, 1, 1))], 4,
    ),
    "Concat": lambda: _model([make("Relu", ["x"], ["r"]), make("Concat", ["x", "r"], ["y"], axis=1)], [], 4),
    "Transpose": lambda: _model([make("Transpose", ["x"], ["y"], perm=[0, 3, 1, 2])], [], 4),
    "Erf": lambda: _model([make("Erf", ["x"], ["y"])], [], 4),
    "Gelu_erf_idiom": lambda: _model(
        [make("Div", ["x", "sqrt2"], ["d"]), make("Erf", ["d"], ["e"]), make("Add", ["e", "one"], ["a"]),
         make("Mul", ["x", "a"], ["m"]), make("Mul", ["m", "half"], ["y"])],
        [numpy_helper.from_array(np.array(2**0.5, np.float32), "sqrt2"),
         numpy_helper.from_array(np.array(1.0, np.float32), "one"),
         numpy_helper.from_array(np.array(0.5, np.float32), "half")], 4,
    ),
    "Gelu": lambda: _model([make("Gelu", ["x"], ["y"])], [], 4, opset=20),
    "Gelu_tanh": lambda: _model([make("Gelu", ["x"], ["y"], approximate="tanh")], [], 4, opset=20),
    "Clip_relu6": lambda: _model(
        [make("Clip", ["x", "lo", "hi"], ["y"])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
         numpy_helper.from_array(np.array(6.0, np.float32), "hi")], 4,
    ),
    "GlobalAveragePool": lambda: _model([make("GlobalAveragePool", ["x"], ["y"])], [], 4),
    "Flatten": lambda: _model([make("Flatten", ["x"], ["y"], axis=2)], [], 2),
    "Reshape": lambda: _model([make("Reshape", ["x", "s"], ["y"])], [_ints("s", [0, -1, 12])], 3),
    # torch.onnx (TorchScript) x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat
    "legacy_flatten": lambda: _model(
        [make("Shape", ["x"], ["s"]), make("Gather", ["s", "zero"], ["b"], axis=0),
         make("Unsqueeze", ["b", "axis0"], ["bu"]), make("Concat", ["bu", "minus1"], ["shape"], axis=0),
         make("Reshape", ["x", "shape"], ["y"])],
        [_ints("zero", 0), _ints("axis0", [0]), _ints("minus1", [-1])], 2,
    ),
    # paddle2onnx: Shape -> Slice(0:1) -> Concat -> Reshape
    "slice_flatten": lambda: _model(
        [make("Shape", ["x"], ["s"]), make("Slice", ["s", "st", "en", "ax"], ["b"]),
         make("Concat", ["b", "minus1"], ["shape"], axis=0), make("Reshape", ["x", "shape"], ["y"])],
        [_ints("st", [0]), _ints("en", [1]), _ints("ax", [0]), _ints("minus1", [-1])], 2,
    ),
    # channel split by computed sizes: Shape -> Gather(1) -> Cast -> Div -> Cast -> Reshape
    "cast_div_reshape": lambda: _model(
        [make("Shape", ["x"], ["s"]), make("Gather", ["s", "one"], ["c"], axis=0),
         make("Cast", ["c"], ["cf"], to=TensorProto.FLOAT), make("Div", ["cf", "two"], ["half"]),
         make("Cast", ["half"], ["hi"], to=TensorProto.INT64), make("Unsqueeze", ["hi", "axis0"], ["hu"]),
         make("Concat", ["zero1", "two_i", "hu", "minus1"], ["shape"], axis=0),
         make("Reshape", ["x", "shape"], ["r"]), make("Slice", ["r", "st", "en", "ax"], ["y"])],
        [_ints("one", 1), numpy_helper.from_array(np.array(2.0, np.float32), "two"), _ints("axis0", [0]),
         _ints("zero1", [0]), _ints("two_i", [2]), _ints("minus1", [-1]),
         _ints("st", [1]), _ints("en", [2]), _ints("ax", [1])], 4,
    ),
    "Sub_Squeeze_Gather": lambda: _model(
        [make("GlobalAveragePool", ["x"], ["p"]), make("Squeeze", ["p", "hw"], ["s"]),
         make("Sub", ["s", "c"], ["d"]), make("Gather", ["d", "idx"], ["y"], axis=1)],
        [_ints("hw", [2, 3]), _weight("c", (4,)), _ints("idx", [3, 0])], 2,
    ),
}  # fmt: skip


def _runtime(model: onnx.ModelProto, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


@pytest.mark.parametrize("case", list(CASES))
def test_operator_matches_onnx_runtime(case: str) -> None:
    model = CASES[case]()
    gm = load_onnx(model)  # itself checked against ONNX Runtime on a batch of 2
    for batch in (1, 3):
        x = torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(batch)) * 3
        with torch.no_grad():
            actual = gm(x)
        expected = _runtime(model, x)
        error = float((actual - expected).abs().max())
        print(f"{case} batch {batch}: max |imported - ONNX Runtime| = {error:.2e}")
        assert actual.shape == expected.shape
        assert error <= 1e-5 * max(1.0, float(expected.abs().max()))


def test_hard_sigmoid_is_a_gate_for_lrp() -> None:
    targets = {n.target for n in import_onnx(CASES["HardSigmoid_onnx_default"]()).graph.nodes}
    assert torch.ops.aten.hardsigmoid.default in targets


def test_shape_arithmetic_folds_to_constants() -> None:
    gm = import_onnx(CASES["cast_div_reshape"]())
    reshape = next(n for n in gm.graph.nodes if n.target is torch.ops.aten.reshape.default)
    assert reshape.args[1][1:] == [2, 2, -1]  # 4 channels // 2, computed at import
    flatten = import_onnx(CASES["legacy_flatten"]())
    reshape = next(n for n in flatten.graph.nodes if n.target is torch.ops.aten.reshape.default)
    batch, rest = reshape.args[1]  # the batch size read back at run time
    assert batch.target is torch.ops.aten.sym_size.int and batch.args[1] == 0 and rest == -1


def test_a_shape_computed_from_the_batch_size_is_refused() -> None:
    nodes = [
        make("Shape", ["x"], ["s"]), make("Gather", ["s", "zero"], ["b"], axis=0),
        make("Mul", ["b", "two"], ["b2"]), make("Unsqueeze", ["b2", "axis0"], ["bu"]),
        make("Concat", ["bu", "minus1"], ["shape"], axis=0), make("Reshape", ["x", "shape"], ["y"]),
    ]  # fmt: skip
    inits = [_ints("zero", 0), _ints("two", 2), _ints("axis0", [0]), _ints("minus1", [-1])]
    with pytest.raises(ModelLoadError, match="a Reshape to a shape computed from the batch size"):
        import_onnx(_model(nodes, inits, 2))


# -- graphs of other toolchains ----------------------------------------------------------------


def _unscoped_cnn(names: list[str], dims: list) -> onnx.ModelProto:
    """conv -> relu -> conv -> relu -> global pool -> flatten -> gemm, named like tf2onnx /
    paddle2onnx / hand-written graphs (no "/" scopes)."""
    nodes = [
        make("Conv", ["x", "w1", "b1"], ["c1"], name=names[0], pads=[1, 1, 1, 1]),
        make("Relu", ["c1"], ["r1"], name=names[1]),
        make("Conv", ["r1", "w2"], ["c2"], name=names[2], pads=[1, 1, 1, 1]),
        make("Relu", ["c2"], ["r2"], name=names[3]),
        make("GlobalAveragePool", ["r2"], ["p"], name=names[4]),
        make("Flatten", ["p"], ["f"], name=names[5]),
        make("Gemm", ["f", "wf", "bf"], ["y"], name=names[6], transB=1),
    ]
    inits = [_weight("w1", (8, 3, 3, 3)), _weight("b1", (8,)), _weight("w2", (8, 8, 3, 3)),
             _weight("wf", (5, 8)), _weight("bf", (5,))]  # fmt: skip
    return _model(nodes, inits, 2, dims=dims)


@pytest.mark.parametrize(
    "names",
    [
        ["Conv.0", "Relu.0", "Conv.1", "Relu.1", "GlobalAveragePool.0", "Flatten.0", "Gemm.0"],
        ["layer_1_conv", "layer_1_relu", "layer_19_conv", "layer_19_relu", "pool", "flat", "fc"],
    ],
    ids=["paddle2onnx", "handwritten"],
)
def test_graph_without_module_paths_is_addressed_by_node_name(names: list[str]) -> None:
    graph = ModelGraph(load_onnx(_unscoped_cnn(names, ["N", 3, 8, 8])))
    assert graph.layers == names
    assert graph.default_layer() == names[3]
    split = graph.split(names[3])
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(split.head(split.trunk(x)), graph.gm(x))


def test_symbolic_image_size_takes_the_configured_size() -> None:
    names = ["c1", "r1", "c2", "r2", "pool", "flat", "fc"]
    model = _unscoped_cnn(names, [-1, 3, None, None])
    with pytest.raises(ModelLoadError, match="declares no fixed size.*fix: set preprocess.size"):
        load_onnx(model)
    graph = ModelGraph(load_onnx(model, input_size=(12, 10)))
    assert graph.input_shape == (3, 12, 10)  # folded for that size: samples must have it
    x = torch.randn(2, 3, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(graph.gm(x), _runtime(model, x), atol=1e-5, rtol=1e-5)


class _ViewFlattenCNN(nn.Module):
    """A 1-channel CNN flattening with `x.view(x.size(0), -1)`, digit_recognizer's idiom."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(x.view(x.size(0), -1))


def test_legacy_exporter_flatten_idiom_imports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _ViewFlattenCNN().eval()
    path = tmp_path / "view.onnx"
    torch.onnx.export(
        model, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, opset_version=13,
        input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
        do_constant_folding=False,
    )  # fmt: skip
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape"} <= ops
    graph = ModelGraph(load_onnx(path))
    assert graph.input_shape == (1, 8, 8)
    assert graph.default_layer() == "features"
    x = torch.randn(5, 1, 8, 8)
    split = graph.split("features")
    with torch.no_grad():
        torch.testing.assert_close(split.head(split.trunk(x)), model(x), atol=1e-5, rtol=1e-5)


def test_a_pool_of_the_unnamed_input_is_refused_with_the_fix() -> None:
    """Scoped names elsewhere, but nothing named between the input and the pool: no block to
    name (was `IndexError: tuple index out of range`)."""
    nodes = [
        make("GlobalAveragePool", ["x"], ["p"], name="/pool/GlobalAveragePool"),
        make("Flatten", ["p"], ["f"], name="/Flatten"),
        make("Conv", ["p", "w"], ["c"], name="/head/conv/Conv"),
        make("Flatten", ["c"], ["y"], name="/head/Flatten"),
    ]
    graph = ModelGraph(import_onnx(_model(nodes, [_weight("w", (3, 4, 1, 1))], 2)))
    with pytest.raises(LayerNotFoundError, match="cannot name the last convolutional block"):
        graph.default_layer()


class _GeluHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def test_erf_gelu_of_the_legacy_exporter_becomes_one_activation_lrp_explains(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _GeluHead().eval()
    path = tmp_path / "gelu.onnx"
    torch.onnx.export(model, (torch.zeros(2, 3, 6, 6),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}})  # fmt: skip
    assert "Erf" in {n.op_type for n in onnx.load(str(path)).graph.node}
    gm = load_onnx(path)
    targets = {n.target for n in gm.graph.nodes}
    assert torch.ops.aten.gelu.default in targets and torch.ops.aten.erf.default not in targets
    x = torch.randn(3, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), atol=1e-5, rtol=1e-5)
    relevance = LRP(ModelGraph(gm).gm, composite("epsilon")).attribute(x)  # binds: no product left
    assert relevance.shape == x.shape
    hand_built = {n.target for n in import_onnx(CASES["Gelu_erf_idiom"]()).graph.nodes}
    assert torch.ops.aten.gelu.default in hand_built
