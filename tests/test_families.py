"""The conformance zoo (`tests/families`): every CNN family teams deploy, in every format the
auditor loads (the eager module exported, the `torch.export` program saved and loaded as MLflow
stores it, the ONNX export imported), through every registered relevance method and LRP
composite: each runs, or is refused before any pass with one line naming the operation, its
node, its module path and the supported families. LRP-0 conserves the explained logit
[Bach2015, Montavon2019], the formats give the same maps, and torchvision's in-place idioms
explain exactly as their out-of-place twins."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import fx

from auditor.errors import AuditorError, RelevanceError
from auditor.model.graph import ModelGraph
from auditor.model.onnx import load_onnx
from auditor.relevance import explain
from auditor.relevance.base import RELEVANCE_METHODS
from auditor.relevance.composites import COMPOSITES, composite
from auditor.relevance.lrp import LRP
from tests.families import FAMILIES, Family, pair

torch.set_num_threads(1)
SIZE = 32
FORMATS = ("eager", "pt2", "onnx")
#: relevance compared across formats: every LRP composite and SRD
GRAPH_METHODS = [("lrp", {"composite": name}) for name in COMPOSITES.names()] + [("srd", {})]
#: light options for the sampling methods (their defaults take hundreds of forward passes)
OPTIONS = {
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"n_samples": 4},
    "shapley_sampling": {"n_samples": 2},
    "kernel_shap": {"n_samples": 16},
    "lime": {"n_samples": 16},
}


def _images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@dataclass
class Built:
    """One family's model in every format, exported once."""

    family: Family
    graphs: dict[str, ModelGraph]
    functional: ModelGraph  # the out-of-place build, same weights


def _export(model: torch.nn.Module, x: torch.Tensor) -> torch.export.ExportedProgram:
    """What `ModelGraph.from_module` exports (inference mode, dynamic batch)."""
    return torch.export.export(
        copy.deepcopy(model).eval(), (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},)
    )


def _build(family: Family, root: Path) -> Built:
    inplace, functional = pair(family.name)
    x = _images()
    program = _export(inplace, x)
    torch.export.save(program, str(root / "model.pt2"))  # MLflow's default pytorch artefact
    onnx_path = root / "model.onnx"
    torch.onnx.export(
        inplace, (x,), str(onnx_path), dynamo=False, opset_version=20, input_names=["images"],
        output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip
    graphs = {
        "eager": ModelGraph.from_program(program),
        "pt2": ModelGraph.from_program(torch.export.load(str(root / "model.pt2"))),
        "onnx": ModelGraph(load_onnx(onnx_path)),
    }
    return Built(family, graphs, ModelGraph.from_module(functional, x))


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    """`zoo(name)`: the family's `Built`, made on first use and shared by every test."""
    cache: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in cache:
            cache[name] = _build(FAMILIES[name], tmp_path_factory.mktemp(name))
        return cache[name]

    return get


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1].item()


def _refused_up_front(family: Family, method: str, graph: ModelGraph, monkeypatch) -> str:
    """Construct `method` on `graph` with every interpreter pass forbidden; the refusal's line."""

    def no_pass(*_args, **_kwargs):
        raise AssertionError("a pass ran before the refusal")

    with monkeypatch.context() as patch:
        patch.setattr(fx.Interpreter, "run", no_pass)
        with pytest.raises(RelevanceError) as refused:
            RELEVANCE_METHODS.get(method)(graph, **OPTIONS.get(method, {}))
    return str(refused.value)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", FAMILIES)
def test_outputs_agree_and_default_layer_is_the_familys_feature_layer(zoo, name, fmt):
    built = zoo(name)
    graph = built.graphs[fmt]
    x = _images(3, seed=2)
    torch.testing.assert_close(graph.gm(x), built.graphs["eager"].gm(x), atol=1e-4, rtol=1e-4)
    assert graph.default_layer() == built.family.layer


@pytest.mark.parametrize("method", RELEVANCE_METHODS.names())
@pytest.mark.parametrize("name", FAMILIES)
def test_every_method_runs_or_is_refused_up_front(zoo, name, method, monkeypatch):
    built = zoo(name)
    graph = built.graphs["eager"]
    family = built.family
    if not family.applies(method):
        message = _refused_up_front(family, method, graph, monkeypatch)
        assert "\n" not in message
        assert f"operation {family.refused[method]} at node '" in message
        assert "in module '" in message and "families (README: Supported models)" in message
        assert RelevanceError("x", "y").exit_code == AuditorError.exit_code == 2
        return
    x = _images()
    relevance = explain(graph, x, method=method, reduce=False, **OPTIONS.get(method, {}))
    assert relevance.shape[0] == len(x) and relevance.shape[-2:] == x.shape[-2:]
    assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_every_composite_explains_the_default_layer(zoo, name):
    """At the layer an audit ranks channels at (the input: `test_same_maps_...`)."""
    built = zoo(name)
    x = _images()
    for composite_name in COMPOSITES.names():
        relevance = explain(
            built.graphs["eager"], x, method="lrp", composite=composite_name,
            layer=built.family.layer, reduce=False,
        )  # fmt: skip
        assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0, composite_name


def _bias_free(graph: ModelGraph) -> ModelGraph:
    """A copy of an exported graph without biases (BatchNorm a pure scale): the relevance of
    a conservative rule then sums to the explained logit."""
    gm = copy.deepcopy(graph.gm)
    for key, tensor in [*gm.named_parameters(), *gm.named_buffers()]:
        if key.endswith((".bias", ".running_mean")):
            tensor.data.zero_()
    return ModelGraph(gm)


@pytest.mark.parametrize("epsilon", [0.0, 1e-12], ids=["lrp0", "epsilon"])
@pytest.mark.parametrize("name", FAMILIES)
def test_lrp_conserves_the_explained_logit(zoo, name, epsilon):
    graph = _bias_free(zoo(name).graphs["eager"])
    x = _images(3).double()
    graph.gm.double()
    relevance, logits = LRP(graph.gm, composite("epsilon", epsilon)).attribute_with_logits(x)
    explained = logits.max(dim=1).values
    error = (relevance.sum(dim=(1, 2, 3)) - explained).abs() / explained.abs()
    assert error.max() <= 1e-3, f"relative conservation error {error.max():.2e}"


def _format_cases():
    for name, family in FAMILIES.items():
        for method, options in GRAPH_METHODS:
            if not family.applies(method):
                continue
            key = options.get("composite", method)
            marks = []
            if method in family.onnx_xfail:
                marks = [pytest.mark.xfail(strict=True, reason=family.onnx_xfail[method])]
            yield pytest.param(name, method, options, marks=marks, id=f"{name}-{key}")


@pytest.mark.parametrize(("name", "method", "options"), _format_cases())
def test_same_maps_for_eager_pt2_and_onnx(zoo, name, method, options):
    built = zoo(name)
    x = _images()
    maps = {
        fmt: explain(graph, x, method=method, reduce=False, **options)
        for fmt, graph in built.graphs.items()
    }
    for fmt in ("pt2", "onnx"):
        assert maps[fmt].shape == maps["eager"].shape
        assert _correlation(maps[fmt], maps["eager"]) >= 0.999, fmt


@pytest.mark.parametrize(
    ("name", "method"),
    [(n, m) for n, f in FAMILIES.items() for m in ("lrp", "srd") if f.applies(m)],
)
def test_in_place_and_out_of_place_builds_give_identical_maps(zoo, name, method):
    built = zoo(name)
    x = _images()
    inplace = explain(built.graphs["eager"], x, method=method, reduce=False)
    functional = explain(built.functional, x, method=method, reduce=False)
    torch.testing.assert_close(inplace, functional, rtol=1e-5, atol=1e-7)
