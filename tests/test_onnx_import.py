"""ONNX models imported into the aten graph: same outputs, layers and relevance as the
`torch.export` graph of the same model; unsupported operators refused by name; MLflow's onnx
flavour."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from mlflow.models import Model
from onnx import TensorProto, helper, numpy_helper
from torch import fx, nn

from auditor.errors import ModelLoadError
from auditor.model.graph import ModelGraph
from auditor.model.onnx import check_runtime_parity, import_onnx, load_onnx, random_input
from auditor.model.onnx.module_paths import NAME_SCOPES, onnx_module_paths, scope_paths
from auditor.model.zoo import SmallResNet, SmallVGG
from auditor.relevance.composites import composite
from auditor.relevance.lrp import LRP
from auditor.tracking.resolve import load_model

aten = torch.ops.aten
torch.set_num_threads(1)

SIZE = 16


def _nested_sequential() -> nn.Sequential:
    """A model whose root is a Sequential of Sequentials (numeric module paths `0`, `0.1`)."""
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


MODELS = {"resnet": SmallResNet, "vgg": SmallVGG, "sequential": _nested_sequential}


def _trained_looking(name: str, seed: int = 0) -> nn.Module:
    """A zoo model in eval mode with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = MODELS[name]().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return model


def _export(model: nn.Module, path: Path, *, fold: bool = True) -> Path:
    """torch.onnx.export (TorchScript-based) with a dynamic batch axis; `fold` lets the
    exporter fold BatchNorm into the convolutions, as it does by default."""
    torch.onnx.export(
        model,
        (torch.zeros(2, 3, SIZE, SIZE),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=fold,
    )
    return path


@dataclass(frozen=True)
class Imported:
    """One zoo model, its ONNX export imported, and its torch.export graph."""

    model: nn.Module
    path: Path
    graph: ModelGraph
    reference: ModelGraph
    fold: bool


@pytest.fixture(scope="module", params=[(m, f) for m in MODELS for f in (True, False)], ids=str)
def imported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Imported:
    name, fold = request.param
    model = _trained_looking(name)
    path = _export(model, tmp_path_factory.mktemp("onnx") / f"{name}.onnx", fold=fold)
    x = torch.randn(2, 3, SIZE, SIZE)
    return Imported(
        model, path, ModelGraph(load_onnx(path)), ModelGraph.from_module(model, x), fold
    )


def _images(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _runtime(path: Path | onnx.ModelProto, x: torch.Tensor) -> torch.Tensor:
    source = str(path) if isinstance(path, Path) else path.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def _targets(gm: fx.GraphModule) -> set:
    return {n.target for n in gm.graph.nodes if n.op == "call_function"}


# -- module paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "paths"),
    [
        ("/layer1/layer1.0/conv1/Conv", ["layer1", "layer1.0", "layer1.0.conv1"]),
        (
            "/layer2/layer2.0/downsample/downsample.0/Conv",
            ["layer2", "layer2.0", "layer2.0.downsample", "layer2.0.downsample.0"],
        ),
        ("/layer1/layer1.0/Add", ["layer1", "layer1.0"]),
        ("/features/features.3/Conv", ["features", "features.3"]),
        ("/0/0.1/BatchNormalization", ["0", "0.1"]),
        ("/fc/Gemm", ["fc"]),
        ("/Flatten", []),
        ("Identity_3", []),
        ("/model/block.conv/Conv", ["model", "model.block.conv"]),
    ],
)
def test_scope_paths_follow_torch_onnx_naming(name: str, paths: list[str]) -> None:
    assert scope_paths(name) == paths


def test_name_scopes_metadata_of_the_dynamo_exporter_wins_over_the_node_name() -> None:
    node = helper.make_node("Relu", ["a"], ["b"], name="node_relu_6")
    node.metadata_props.add(key=NAME_SCOPES, value=repr(["", "layer3", "layer3.0", "relu_6"]))
    assert onnx_module_paths(node) == ["layer3", "layer3.0"]
    assert onnx_module_paths(helper.make_node("Relu", ["a"], ["b"], name="/fc/Relu")) == ["fc"]


# -- zoo models: outputs, layers, relevance ----------------------------------------------------


def test_outputs_match_eager_and_onnx_runtime(imported: Imported) -> None:
    x = _images()
    with torch.no_grad():
        logits = imported.graph.gm(x)
        torch.testing.assert_close(logits, imported.model(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, _runtime(imported.path, x), atol=1e-5, rtol=1e-5)


def test_layers_and_default_layer_match_torch_export(imported: Imported) -> None:
    layers, reference = set(imported.graph.layers), set(imported.reference.layers)
    if imported.fold:  # the exporter folded every BatchNorm into its convolution
        norms = {p for p, m in imported.model.named_modules() if isinstance(m, nn.BatchNorm2d)}
        assert layers == reference - norms
    else:
        assert layers == reference
    assert imported.graph.default_layer() == imported.reference.default_layer()


def test_unfolded_export_imports_to_the_same_aten_operations(imported: Imported) -> None:
    targets = _targets(imported.graph.gm)
    assert aten.conv2d.default in targets and aten.linear.default in targets
    if not imported.fold:
        assert targets == _targets(imported.reference.gm)


def test_split_at_default_layer_recomposes_the_logits(imported: Imported) -> None:
    x = _images()
    split = imported.graph.split(imported.graph.default_layer())
    with torch.no_grad():
        torch.testing.assert_close(split.head(split.trunk(x)), imported.graph.gm(x))
        activation = imported.reference.split(split.layer).trunk(x)
        torch.testing.assert_close(split.trunk(x), activation, atol=1e-5, rtol=1e-5)


def test_lrp_relevance_equals_relevance_on_the_torch_export_graph(imported: Imported) -> None:
    x = _images()
    rules = composite("epsilon_plus")
    relevance = LRP(imported.graph.gm, rules).attribute(x)
    expected = LRP(imported.reference.gm, rules).attribute(x)
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(relevance, expected, atol=1e-5 * scale, rtol=1e-4)


def test_resnet_stages_split_like_the_torch_export_graph(tmp_path: Path) -> None:
    model = _trained_looking("resnet", seed=3)
    graph = ModelGraph(load_onnx(_export(model, tmp_path / "r.onnx")))
    x = _images()
    with torch.no_grad():
        for layer in ("layer1", "layer2", "layer2.0", "layer3"):
            split = graph.split(layer)
            torch.testing.assert_close(split.head(split.trunk(x)), model(x), atol=1e-5, rtol=1e-5)


# -- operator coverage on a hand-built graph ---------------------------------------------------


def _init(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name)


def _constant(name: str, value: float | list[int]) -> TensorProto:
    dtype = np.int64 if isinstance(value, list) else np.float32
    return numpy_helper.from_array(np.array(value, dtype), name)


def _operator_zoo() -> onnx.ModelProto:
    """Every supported operator with its non-default attributes, on a dynamic batch."""
    rng = np.random.default_rng(0)
    make = helper.make_node
    nodes = [
        make("Conv", ["x", "w0"], ["c0"], name="/stem/Conv", auto_pad="SAME_UPPER", kernel_shape=[2, 2]),
        make("Conv", ["c0", "w1", "b1"], ["c1"], name="/block/conv1/Conv", pads=[0, 0, 1, 1]),
        make("Conv", ["c1", "w2"], ["c2"], name="/block/conv2/Conv", group=2, dilations=[2, 2], pads=[2, 2, 2, 2]),
        make("BatchNormalization", ["c2", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], name="/block/bn/BatchNormalization", epsilon=1e-3),
        make("LeakyRelu", ["bn"], ["a1"], name="/block/act/LeakyRelu", alpha=0.2),
        make("Clip", ["a1", "lo", "hi"], ["a2"], name="/block/clip/Clip"),
        make("HardSwish", ["a2"], ["a3"], name="/block/hs/HardSwish"),
        make("Sigmoid", ["c1"], ["s1"], name="/block/gate/Sigmoid"),
        make("Mul", ["a3", "s1"], ["m1"], name="/block/Mul"),
        make("Concat", ["m1", "c1"], ["cat"], name="/block/Concat", axis=1),
        make("MaxPool", ["cat"], ["mp"], name="/pool1/MaxPool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
        make("AveragePool", ["mp"], ["ap"], name="/pool2/AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
        make("AveragePool", ["mp"], ["ap2"], name="/pool3/AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        make("Softmax", ["ap"], ["sm"], name="/attn/Softmax", axis=1),
        make("Identity", ["sm"], ["id"], name="/attn/Identity"),
        make("Dropout", ["id"], ["dr"], name="/attn/drop/Dropout"),
        make("Add", ["dr", "ap2"], ["add"], name="/Add"),
        make("Transpose", ["add"], ["tr"], name="/Transpose", perm=[0, 2, 3, 1]),
        make("Constant", [], ["shape"], name="/Constant", value=_constant("shape_value", [0, -1, 8])),
        make("Reshape", ["tr", "shape"], ["rs"], name="/Reshape"),
        make("MatMul", ["rs", "wm"], ["mm"], name="/proj/MatMul"),
        make("Add", ["mm", "bm"], ["mmb"], name="/proj/Add"),
        make("ReduceMean", ["mmb"], ["rm"], name="/proj/ReduceMean", axes=[1], keepdims=0),
        make("Flatten", ["add"], ["fl"], name="/head/Flatten", axis=1),
        make("Gemm", ["fl", "wg", "bg"], ["g"], name="/head/fc/Gemm", alpha=0.5, beta=2.0),
        make("GlobalAveragePool", ["add"], ["gap"], name="/gap/GlobalAveragePool"),
        make("Flatten", ["gap"], ["gf"], name="/gap/Flatten"),
        make("Gemm", ["gf", "wt", "bt"], ["gt"], name="/gap/fc/Gemm", transB=1),
        make("Add", ["rm", "g"], ["s"], name="/sum/Add"),
        make("Add", ["s", "gt"], ["logits"], name="/sum/Add_1"),
    ]  # fmt: skip
    initializers = [
        _init("w0", (4, 3, 2, 2), rng), _init("w1", (4, 4, 3, 3), rng), _init("b1", (4,), rng),
        _init("w2", (4, 2, 3, 3), rng), _init("bn_s", (4,), rng), _init("bn_b", (4,), rng),
        _init("bn_m", (4,), rng), numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "bn_v"),
        _constant("lo", -0.5), _constant("hi", 1.0), _init("wm", (8, 5), rng), _init("bm", (5,), rng),
        _init("wg", (128, 5), rng), _init("bg", (5,), rng), _init("wt", (5, 8), rng), _init("bt", (1, 5), rng),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "operator_zoo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_every_supported_operator_matches_onnx_runtime_on_any_batch() -> None:
    model = _operator_zoo()
    gm = load_onnx(model)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            torch.testing.assert_close(gm(x), _runtime(model, x), atol=1e-5, rtol=1e-5)
    targets = _targets(gm)
    assert {
        aten.constant_pad_nd.default,  # asymmetric pads (SAME_UPPER, explicit)
        aten.hardtanh.default,  # Clip
        aten.adaptive_avg_pool2d.default,  # GlobalAveragePool
        aten.linear.default,  # Gemm and MatMul by a constant
        aten.batch_norm.default,
        aten.sym_size.int,  # Reshape's 0 copies the dynamic batch size
    } <= targets
    assert aten.matmul.default not in targets and aten.t.default not in targets
    assert sum(n.target is aten.linear.default for n in gm.graph.nodes) == 3


def test_operations_carry_the_module_paths_of_their_onnx_nodes() -> None:
    graph = ModelGraph(import_onnx(_operator_zoo()))
    assert {"stem", "block", "block.conv1", "block.bn", "block.clip", "head.fc", "gap"} <= set(
        graph.layers
    )
    assert graph.output_node("block.clip").target is aten.hardtanh.default
    assert graph.output_node("gap.fc").target is aten.linear.default


# -- refusals ----------------------------------------------------------------------------------


def test_unsupported_operators_are_named_with_their_nodes() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="/relu/Relu"),
        helper.make_node("Einsum", ["r"], ["e"], name="/mix/Einsum", equation="nchw->nchw"),
        helper.make_node("FusedConv", ["e"], ["f"], name="/fused", domain="com.microsoft"),
        helper.make_node("Einsum", ["f"], ["y"], name="/mix2/Einsum", equation="nchw->nchw"),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "exotic",
        [value("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [value("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    model = helper.make_model(graph)
    with pytest.raises(ModelLoadError) as err:
        import_onnx(model)
    assert err.value.what == (
        "ONNX model exotic uses unsupported operator(s) Einsum, com.microsoft.FusedConv "
        "(nodes /mix/Einsum, /fused, /mix2/Einsum)"
    )
    assert "standard CNN op set" in err.value.fix


def test_unreadable_file_is_a_model_load_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a protobuf")
    with pytest.raises(ModelLoadError, match="broken.onnx cannot be read"):
        load_onnx(path)


def test_parity_mismatch_names_the_difference(tmp_path: Path) -> None:
    model = onnx.load(str(_export(_trained_looking("vgg"), tmp_path / "vgg.onnx")))
    gm = import_onnx(model)
    x = random_input(model)
    assert check_runtime_parity(model, gm, x, name="vgg", what="the graph", fix="f") <= 1e-5
    with pytest.raises(ModelLoadError, match=r"the graph differs from ONNX Runtime by 0\.0[0-9]"):
        check_runtime_parity(
            model, lambda t: gm(t) + 0.05, x, name="vgg", what="the graph", fix="f"
        )


def test_random_input_has_the_declared_shape_with_batch_two() -> None:
    model = _operator_zoo()
    x = random_input(model)
    assert x.shape == (2, 3, 8, 8)
    torch.testing.assert_close(x, random_input(model))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(ModelLoadError, match="declares no fixed size"):
        random_input(model)


# -- MLflow ------------------------------------------------------------------------------------


@pytest.fixture
def tracking(mlflow_server: str) -> Iterator[str]:
    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(mlflow_server)
    try:
        yield mlflow_server
    finally:
        mlflow.set_tracking_uri(None)
        if old_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


@pytest.mark.slow
def test_onnx_flavour_from_the_registry_loads_as_an_imported_graph(
    tracking: str, tmp_path: Path
) -> None:
    model = _trained_looking("resnet", seed=5)
    proto = onnx.load(str(_export(model, tmp_path / "resnet.onnx")))
    with mlflow.start_run():
        mlflow.onnx.log_model(
            proto, name="model", registered_model_name="onnx-resnet", pip_requirements=["onnx"]
        )
    loaded = load_model("models:/onnx-resnet/1", tracking_uri=tracking, trusted=False)
    assert loaded.ref.flavor == "onnx" and loaded.program is None and loaded.module is None
    graph = ModelGraph(loaded.graph)
    assert graph.default_layer() == "layer3"
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(graph.gm(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def pytorch_flavour(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow model directory with the pytorch flavour (pt2) of the seed-0 VGG."""
    directory = tmp_path_factory.mktemp("pytorch") / "model"
    example = np.zeros((2, 3, SIZE, SIZE), np.float32)
    mlflow.pytorch.save_model(
        _trained_looking("vgg"), str(directory), input_example=example, pip_requirements=["torch"]
    )
    return directory


def _with_onnx_flavour(pytorch_flavour: Path, tmp_path: Path, onnx_seed: int) -> Path:
    """A copy of `pytorch_flavour` that also has an onnx flavour, exported from the VGG of
    `onnx_seed`."""
    directory = Path(shutil.copytree(pytorch_flavour, tmp_path / "model"))
    _export(_trained_looking("vgg", seed=onnx_seed), directory / "model.onnx")
    mlmodel = Model.load(str(directory / "MLmodel"))
    mlmodel.add_flavor("onnx", onnx_version=onnx.__version__, data="model.onnx")
    mlmodel.save(str(directory / "MLmodel"))
    return directory


def test_pytorch_flavour_is_loaded_when_its_onnx_twin_agrees(
    pytorch_flavour: Path, tmp_path: Path
) -> None:
    directory = _with_onnx_flavour(pytorch_flavour, tmp_path, onnx_seed=0)
    loaded = load_model(str(directory), tracking_uri="", trusted=False)
    assert loaded.ref.flavor == "pytorch-pt2" and loaded.program is not None
    assert loaded.graph is None


def test_pytorch_and_onnx_flavours_that_disagree_are_refused(
    pytorch_flavour: Path, tmp_path: Path
) -> None:
    directory = _with_onnx_flavour(pytorch_flavour, tmp_path, onnx_seed=1)
    with pytest.raises(ModelLoadError, match="the pytorch flavour differs from ONNX Runtime"):
        load_model(str(directory), tracking_uri="", trusted=False)
