"""One graph representation for every model artefact.

MLflow 3 logs PyTorch models with `torch.export`; loaded back they are FX graphs of aten
operations without `nn.Conv2d` modules. Eager modules are exported the same way, so the
auditor always works on an `fx.GraphModule` whose nodes keep their module path in the
`nn_module_stack` metadata. Layers are addressed by that path (`layer4`, `layer4.1.conv2`);
the output of a layer is the last node executed inside it. Splitting the graph at a layer
gives a trunk (input -> layer output) and a head (layer output -> logits), so activation
capture, channel masks and relevance at that layer are graph edits, not module hooks.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass

import torch
from torch import fx, nn

from auditor.errors import LayerNotFoundError, ModelLoadError
from auditor.model.batch import generalise_batch
from auditor.model.canonical import canonicalise
from auditor.model.ops import (
    BATCH_NORM_OPS,
    CONV_OPS,
    GATE_OPS,
    GLOBAL_POOL_OPS,
    LAYER_NORM_OPS,
    MATRIX_PRODUCT_OPS,
    MOVE_OPS,
    PRODUCT_OPS,
    RESHAPE_OPS,
    SHAPE_OPS,
    SOFTMAX_OPS,
)
from auditor.model.outputs import Outputs, audited_scores
from auditor.model.tokens import TOKEN_RANK

aten = torch.ops.aten

#: placeholder meta key of an imported ONNX graph: its declared image shape (C, H, W)
INPUT_SHAPE = "auditor_input_shape"
#: the submodule `torch.export` adds to check input shapes (not picklable)
GUARDS_MODULE = "_guards_fn"
#: meta key on a head's input placeholder: the layer whose output it is (the head's input is an
#: activation, not the image; LRP's input-layer rules must not apply to it)
CUT_LAYER = "auditor_cut_layer"


def module_paths(node: fx.Node) -> list[str]:
    """Module paths enclosing `node`, outermost first (the root module's '' excluded)."""
    stack = node.meta.get("nn_module_stack") or {}
    return [path for path, _type in stack.values() if path]


def describe_node(node: fx.Node, detail: str = "") -> str:
    """`operation T<detail> at node 'n' in module 'p'`: where a rule is missing, in one phrase."""
    paths = module_paths(node)
    where = f"module '{paths[-1]}'" if paths else "the root module"
    return f"operation {node.target}{detail} at node '{node.name}' in {where}"


def rank(node: fx.Node) -> int | None:
    """The rank of the tensor a node computes, from its recorded value (None if unrecorded)."""
    value = node.meta.get("val")
    return value.dim() if isinstance(value, torch.Tensor) else None


def input_dependent(gm: fx.GraphModule) -> list[fx.Node]:
    """The operations whose value depends on the graph's input (the others are constants)."""
    dependent: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a in dependent for a in node.all_input_nodes):
            dependent.add(node)
    return [n for n in gm.graph.nodes if n in dependent and n.op == "call_function"]


def separates(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether every path of values from the graph's input to its output passes through `node`
    (a shape read, `sym_size`, carries no value: `view(mean(x), [sym_size(x, 0), -1])` is
    separated by the mean)."""
    seen: set[fx.Node] = set()
    stack = [n for n in gm.graph.nodes if n.op == "placeholder" and n is not node]
    while stack:
        current = stack.pop()
        if current.op == "output":
            return False
        if current in seen:
            continue
        seen.add(current)
        stack.extend(u for u in current.users if u is not node and u.target not in SHAPE_OPS)
    return True


def head_start(gm: fx.GraphModule, targets: frozenset) -> fx.Node | None:
    """The first operation of `targets` (global pooling, flatten) that separates the input from
    the logits: where the classifier head begins. A pooling inside a block, such as the
    squeeze of a squeeze-excitation gate, is bypassed by the block's signal and is skipped."""
    return next(
        (
            n for n in gm.graph.nodes
            if n.op == "call_function" and n.target in targets and separates(gm, n)
        ),
        None,
    )  # fmt: skip


def is_gate(arg: object) -> bool:
    """Whether a product operand was computed by a gating function (`GATE_OPS`: sigmoid,
    hardsigmoid, softmax), through view and reshape operations."""
    while isinstance(arg, fx.Node) and arg.op == "call_function" and arg.target in MOVE_OPS:
        arg = arg.args[0]
    return isinstance(arg, fx.Node) and arg.op == "call_function" and arg.target in GATE_OPS


def gate_operand(node: fx.Node) -> int | None:
    """The position (0 or 1) of the gate of product `node` when exactly one operand is a gate
    (`x * sigmoid(g)`), else None."""
    gates = [i for i in (0, 1) if i < len(node.args) and is_gate(node.args[i])]
    return gates[0] if len(gates) == 1 else None


def _freeze(gm: fx.GraphModule) -> fx.GraphModule:
    """Parameters as constants: the auditor never trains. (Exported graphs are always in the
    mode they were exported in, inference here; they refuse `.eval()`.)"""
    for p in gm.parameters():
        p.requires_grad_(False)
    return gm


@dataclass(frozen=True)
class SplitModel:
    """A classifier cut at `layer`: `head(trunk(x))` equals the whole model's logits."""

    layer: str
    trunk: fx.GraphModule
    head: fx.GraphModule


class ModelGraph:
    """A classifier as an FX graph of aten operations with module paths on its nodes, in the
    canonical form of `auditor.model.canonical` (no in-place operations, no eval-mode dropout,
    one BatchNorm form)."""

    def __init__(self, gm: fx.GraphModule, outputs: Outputs = "logits"):
        self.gm = generalise_batch(canonicalise(_plain(gm)), "the model")
        #: what `gm` returns, the scores the audit measures (`auditor.model.outputs`)
        self.scores = audited_scores(self.gm, outputs)
        self._compute = [n for n in self.gm.graph.nodes if n.op == "call_function"]
        self._last_node: dict[str, fx.Node] = {}
        for node in self._compute:
            for path in module_paths(node):
                self._last_node[path] = node

    @classmethod
    def from_program(
        cls, program: torch.export.ExportedProgram, outputs: Outputs = "logits"
    ) -> ModelGraph:
        return cls(program.module(), outputs)

    @classmethod
    def from_module(
        cls, module: nn.Module, example: torch.Tensor, outputs: Outputs = "logits"
    ) -> ModelGraph:
        """Export an eager module in inference mode with a dynamic batch dimension
        (`torch.export`). A copy is exported and frozen: the caller's module keeps its mode,
        `requires_grad` and buffers (it may be in training)."""
        module = copy.deepcopy(module).eval()
        try:
            program = torch.export.export(
                module, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},)
            )
        except Exception as err:  # torch.export raises many unrelated types
            raise ModelLoadError(
                f"model {type(module).__name__} cannot be exported to a graph: "
                f"{str(err).splitlines()[0]}",
                "make forward() free of data-dependent Python control flow",
            ) from err
        return cls.from_program(program, outputs)

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """The image shape (C, H, W) the graph was exported for (or an ONNX model declares),
        None per dynamic dimension; None when the graph does not record it."""
        placeholder = next(n for n in self.gm.graph.nodes if n.op == "placeholder")
        if INPUT_SHAPE in placeholder.meta:
            return placeholder.meta[INPUT_SHAPE]
        value = placeholder.meta.get("val")
        if not isinstance(value, torch.Tensor):
            return None
        return tuple(d if isinstance(d, int) else None for d in value.shape[1:])

    @property
    def layers(self) -> list[str]:
        """Every addressable module path, in the order of their outputs."""
        return sorted(self._last_node, key=lambda p: self._compute.index(self._last_node[p]))

    def layer_shapes(self, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """The output shape of every layer on `example` (one forward pass)."""
        outputs = set(self._last_node.values())
        shapes: dict[fx.Node, tuple[int, ...]] = {}

        class Recorder(fx.Interpreter):
            def run_node(self, n: fx.Node) -> object:
                value = super().run_node(n)
                if n in outputs and isinstance(value, torch.Tensor):
                    shapes[n] = tuple(value.shape)
                return value

        with torch.no_grad():
            Recorder(self.gm).run(example)
        return {path: shapes[node] for path, node in self._last_node.items() if node in shapes}

    def output_node(self, layer: str) -> fx.Node:
        """The node whose value is the output of module `layer`."""
        try:
            return self._last_node[layer]
        except KeyError:
            close = difflib.get_close_matches(layer, self._last_node, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see `auditor layers`"
            raise LayerNotFoundError(
                f"layer '{layer}' is not a module of the model", hint
            ) from None

    @property
    def has_attention(self) -> bool:
        """Whether the graph holds attention: a softmax whose weights feed a matrix product."""
        return any(
            n.target in SOFTMAX_OPS and any(u.target in MATRIX_PRODUCT_OPS for u in n.users)
            for n in self._compute
        )

    def is_token_layer(self, layer: str) -> bool:
        """Whether `layer` outputs tokens, N x T x D (`auditor.model.tokens`)."""
        return rank(self.output_node(layer)) == TOKEN_RANK

    def default_layer(self) -> str:
        """The output of the last feature block: the outermost module whose output is the
        input of the classifier's global pooling. That pooling is the first global pool that
        is not a gate (a squeeze-excitation pool, whose result multiplies its own input, is
        one) nor a flatten of the grid into tokens; in a transformer, the read of the class
        token (`x[:, 0]`), final LayerNorm skipped (the last block); else the first flatten to
        N x features (`x.view(x.size(0), -1)`)."""
        convs = [n for n in self._compute if n.target in CONV_OPS]
        heads = [n for n in self._compute if _is_head_start(n)]
        flattens = [n for n in self._compute if n.target in RESHAPE_OPS and _to_rank_2(n)]
        if not (heads or flattens) or not convs:
            raise LayerNotFoundError(
                "the model has no convolution followed by global pooling",
                "name the audited layer in the config (model.layer)",
            )
        node = (heads or flattens)[0].args[0]
        while isinstance(node, fx.Node) and node.op == "call_function" and (
            not module_paths(node) or node.target in LAYER_NORM_OPS
        ):
            node = node.args[0]
        for path in module_paths(node) if isinstance(node, fx.Node) else []:
            if self._last_node[path] is node:
                return path
        raise LayerNotFoundError(
            "cannot name the last convolutional block", "name it in the config (model.layer)"
        )

    def split(self, layer: str) -> SplitModel:
        """Cut the graph at the output of `layer` into trunk and head graphs.

        The head holds every operation that depends on the layer output. The cut is valid only
        when every path from the input to the logits passes through that output (a block
        output, not a layer inside a residual branch).
        """
        cut = self.output_node(layer)
        graph = self.gm.graph
        above: set[fx.Node] = set()
        for node in graph.nodes:
            if node is cut or any(a in above for a in node.all_input_nodes):
                above.add(node)
        above.discard(cut)

        trunk = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for node in graph.nodes:
            if node.op == "output":
                break
            if node in above:
                continue
            env[node] = trunk.node_copy(node, lambda n: env[n])
            if node is cut:
                break
        tokens = rank(cut) == TOKEN_RANK  # the activation channels first, N x D x T
        trunk.output(trunk.call_function(aten.transpose.int, (env[cut], 1, 2)) if tokens else env[cut])

        head = fx.Graph()
        activation = head.placeholder("activation")
        activation.meta[CUT_LAYER] = layer
        henv: dict[fx.Node, fx.Node] = {
            cut: head.call_function(aten.transpose.int, (activation, 1, 2)) if tokens else activation
        }
        for node in graph.nodes:
            if node.op == "output":
                head.output(henv[node.args[0]])
            elif node in above:
                for dep in node.all_input_nodes:
                    if dep in henv:
                        continue
                    if _is_batch_size(dep):  # `x.size(0)` below the cut: the batch size
                        henv[dep] = head.call_function(aten.sym_size.int, (henv[cut], 0))
                        henv[dep].meta = dict(dep.meta)
                        continue
                    if dep.op != "get_attr":
                        raise LayerNotFoundError(
                            f"layer '{layer}' does not separate the model: '{node.name}' also "
                            f"reads '{dep.name}' from below it",
                            "choose a block output (e.g. a residual stage) as the audited layer",
                        )
                    henv[dep] = head.node_copy(dep)
                henv[node] = head.node_copy(node, lambda n: henv[n])
        return SplitModel(
            layer=layer,
            trunk=_freeze(fx.GraphModule(self.gm, trunk)),
            head=_freeze(fx.GraphModule(self.gm, head)),
        )


def _is_batch_size(node: fx.Node) -> bool:
    """Whether `node` reads the batch size (`aten.sym_size(t, 0)`), the same above any cut."""
    return node.target is aten.sym_size.int and len(node.args) > 1 and node.args[1] == 0


def _is_gate_pool(pool: fx.Node) -> bool:
    """Whether a global pool computes a gate: a product downstream of it also reads the pool's
    input (squeeze-excitation `x * sigmoid(W2 relu(W1 pool(x)))` [Hu2018])."""
    source = pool.args[0]
    products = {u for u in source.users if u is not pool and u.target in PRODUCT_OPS}
    if not products:
        return False
    seen, frontier = {pool}, [pool]
    while frontier:
        for user in frontier.pop().users:
            if user in products:
                return True
            if user not in seen:
                seen.add(user)
                frontier.append(user)
    return False


def _to_rank_2(node: fx.Node) -> bool:
    """Whether a reshape's target shape has two dimensions (N x features)."""
    shape = node.args[1] if len(node.args) > 1 else None
    return isinstance(shape, (list, tuple)) and len(shape) == 2


def _is_head_start(node: fx.Node) -> bool:
    """Where the classifier head starts: a global pooling that is not a gate nor a flatten of
    the spatial grid into tokens, or the read of a class token from N x T x D tokens."""
    if node.target in GLOBAL_POOL_OPS:
        return rank(node) != TOKEN_RANK and not _is_gate_pool(node)
    if node.target is aten.select.int:
        source = node.args[0]
        return node.args[1:] == (1, 0) and isinstance(source, fx.Node) and rank(source) == TOKEN_RANK
    return False


def fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule:
    """Canonize for LRP: fold every inference BatchNorm into the convolution feeding it.

    `BN(conv(x; W, b)) = conv(x; W * s, (b - mu) * s + beta)` with `s = gamma / sqrt(var + eps)`
    per output channel, for `conv2d` and the decomposed `convolution`. A BatchNorm not fed by an
    unshared convolution stays in place (LRP then treats it as a per-channel affine layer).
    Returns a new GraphModule; `gm` is unchanged.
    """
    folded = _plain(gm)
    for bn in list(folded.graph.nodes):
        if bn.target not in BATCH_NORM_OPS:
            continue
        conv = bn.args[0]
        if not (isinstance(conv, fx.Node) and conv.target in CONV_OPS and len(conv.users) == 1):
            continue
        if conv.target is aten.convolution.default and conv.args[6]:  # transposed
            continue
        _, w_node, b_node, mean_node, var_node, training, _momentum, eps, _cudnn = bn.args
        if training:
            continue
        conv_w = _attr(folded, conv.args[1])
        conv_b = _attr(folded, conv.args[2]) if len(conv.args) > 2 else None
        gamma, beta = _attr(folded, w_node), _attr(folded, b_node)
        mean, var = _attr(folded, mean_node), _attr(folded, var_node)
        scale = (gamma if gamma is not None else torch.ones_like(var)) / torch.sqrt(var + eps)
        shift = beta if beta is not None else torch.zeros_like(var)
        new_w = conv_w * scale.reshape(-1, 1, 1, 1)
        new_b = ((conv_b if conv_b is not None else torch.zeros_like(var)) - mean) * scale + shift
        prefix = f"_folded_{conv.name}"
        folded.register_buffer(f"{prefix}_weight", new_w.detach().clone())
        folded.register_buffer(f"{prefix}_bias", new_b.detach().clone())
        with folded.graph.inserting_before(conv):
            w_attr = folded.graph.get_attr(f"{prefix}_weight")
            b_attr = folded.graph.get_attr(f"{prefix}_bias")
        if conv.target is aten.conv2d.default:
            args = list(conv.args) + [None] * (7 - len(conv.args))
            defaults = ([1, 1], [0, 0], [1, 1], 1)
            args[3:] = [a if a is not None else d for a, d in zip(args[3:], defaults)]
        else:
            args = list(conv.args)
        args[1], args[2] = w_attr, b_attr
        conv.args = tuple(args)
        bn.replace_all_uses_with(conv)
        folded.graph.erase_node(bn)
    folded.graph.eliminate_dead_code()
    folded.recompile()
    return _freeze(folded)


def _single_output(output: fx.Node, what: str) -> fx.Node:
    """The one tensor a graph returns (export wraps outputs in a tuple)."""
    value = output.args[0]
    while isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ModelLoadError(
                f"the model returns {len(value)} outputs; the auditor needs one tensor of {what}",
                "wrap the model so that forward() returns the class logits only",
            )
        value = value[0]
    return value


def _attr(gm: fx.GraphModule, node: fx.Node | None) -> torch.Tensor | None:
    """The tensor a `get_attr` node reads (None for an absent optional argument)."""
    if node is None:
        return None
    owner, _, name = node.target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


def _plain(gm: fx.GraphModule) -> fx.GraphModule:
    """A frozen copy of `gm` called as `gm(x) -> logits`: one input, one tensor out (exported
    graphs take and return pytrees). The exported module's input-shape guard (`_guards_fn`, a
    call with no output) is left out: the auditor checks that samples fit the model itself,
    and without it the graph pickles, so that workers of a distributed executor can hold it."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise ModelLoadError(
            f"the model takes {len(inputs)} inputs; the auditor needs one image batch",
            "wrap the model so that forward(x) takes the image batch only",
        )
    for node in gm.graph.nodes:
        if node.op == "output":
            graph.output(env[_single_output(node, "logits")])
        elif not (node.op == "call_module" and node.target == GUARDS_MODULE):
            env[node] = graph.node_copy(node, lambda n: env[n])
    return _freeze(fx.GraphModule(gm, graph))
