"""Activation-pattern-only prediction (APOP; [Han2024, Table 1, Table 3 and Appendix
D, Algorithm 1]).

A forward pass records the binary activation pattern of a batch: for every ReLU the mask
`m = sign(relu(z)) in {0, 1}` and for every max-pool the argmax indices. The model then
predicts again from an input that carries no information (zeros, ones or N(0, 1) noise) with
every ReLU replaced by `z -> z * m` and every max-pool by "take the recorded positions"
(Algorithm 1, `APOP_forward`); the "APOP & relu" variant re-applies ReLU after the mask,
`z -> relu(z * m)` (Table 3). How much accuracy survives measures how much of the decision the
on/off pattern alone carries.

Both passes are interpreters over the model's aten graph (`gm(x) -> logits`): `aten.relu` and
`aten.max_pool2d(_with_indices)` nodes are recorded / replaced, every other operation runs as
is on the new input (other nonlinearities, e.g. sigmoid, are therefore not frozen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import fx

from auditor.errors import RelevanceError
from auditor.model.graph import ModelGraph
from auditor.model.ops import MAX_POOL_OPS, RELU_OPS

aten = torch.ops.aten

Fill = Literal["zeros", "ones", "normal"]


@dataclass(frozen=True)
class ActivationPattern:
    """The on/off pattern of a batch: ReLU masks and max-pool argmax indices by node name."""

    relu_masks: dict[str, torch.Tensor]
    pool_indices: dict[str, torch.Tensor]


@dataclass(frozen=True)
class ApopResult:
    """APOP of a batch [Han2024, Table 3].

    `accuracy`: share of samples whose reference class is among the top-k APOP predictions;
    the reference is the label, or without labels the original prediction (agreement).
    `original_accuracy`: top-k accuracy of the unmodified model (None without labels).
    """

    fill: Fill
    relu_after: bool
    top_k: int
    accuracy: float
    original_accuracy: float | None
    predictions: torch.Tensor
    original_predictions: torch.Tensor


def _pool_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """`(x, kernel, stride, padding, dilation, ceil_mode)` with aten's defaults filled in."""
    x, kernel, *rest = args
    defaults = ([], [0, 0], [1, 1], False)
    return (x, kernel, *rest, *defaults[len(rest) :])


def gather_pool(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Max-pool replaced by its recorded argmax: `out[n,c,i] = x[n,c,indices[n,c,i]]` (flat
    spatial indices, as `max_pool2d_with_indices` returns them)."""
    return x.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)


class _PatternInterpreter(fx.Interpreter):
    """Runs the graph recording the pattern (`pattern=None`) or replaying a recorded one."""

    def __init__(
        self, gm: fx.GraphModule, pattern: ActivationPattern | None, relu_after: bool = False
    ):
        super().__init__(gm)
        self.replay = pattern
        self.recorded = ActivationPattern({}, {})
        self.relu_after = relu_after

    def run_node(self, n: fx.Node) -> Any:
        if n.op != "call_function" or n.target not in RELU_OPS | MAX_POOL_OPS:
            return super().run_node(n)
        args, _kwargs = self.fetch_args_kwargs_from_env(n)
        if n.target in RELU_OPS:
            return self._relu(n.name, args[0])
        pooled = self._pool(n.name, _pool_args(args))
        return pooled if n.target is aten.max_pool2d_with_indices.default else pooled[0]

    def _relu(self, name: str, z: torch.Tensor) -> torch.Tensor:
        if self.replay is None:
            out = z.clamp(min=0)
            self.recorded.relu_masks[name] = torch.sign(out)
            return out
        out = z * self.replay.relu_masks[name]
        return out.clamp(min=0) if self.relu_after else out

    def _pool(self, name: str, args: tuple[Any, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.replay is None:
            out, indices = aten.max_pool2d_with_indices.default(*args)
            self.recorded.pool_indices[name] = indices
            return out, indices
        indices = self.replay.pool_indices[name]
        return gather_pool(args[0], indices), indices


def record_pattern(
    gm: fx.GraphModule, inputs: torch.Tensor
) -> tuple[ActivationPattern, torch.Tensor]:
    """(activation pattern of `inputs`, logits): Algorithm 1's `forward`."""
    interpreter = _PatternInterpreter(gm, None)
    with torch.no_grad():
        logits = interpreter.run(inputs)
    return interpreter.recorded, logits


def pattern_forward(
    gm: fx.GraphModule,
    pattern: ActivationPattern,
    inputs: torch.Tensor,
    *,
    relu_after: bool = False,
) -> torch.Tensor:
    """Logits of `inputs` with every ReLU masked by, and every max-pool gathered at, the
    recorded `pattern` (Algorithm 1's `APOP_forward`); `relu_after` re-applies ReLU after the
    mask. Replaying a batch's own pattern on that batch reproduces the model's logits."""
    with torch.no_grad():
        return _PatternInterpreter(gm, pattern, relu_after).run(inputs)


def fill_like(inputs: torch.Tensor, fill: Fill, generator: torch.Generator) -> torch.Tensor:
    """The information-free APOP input: zeros, ones, or (else) N(0, 1) drawn from `generator`."""
    if fill == "zeros":
        return torch.zeros_like(inputs)
    if fill == "ones":
        return torch.ones_like(inputs)
    noise = torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype)
    return noise.to(inputs.device)


def _hits(logits: torch.Tensor, reference: torch.Tensor, top_k: int) -> torch.Tensor:
    """Per sample: whether `reference` is among the `top_k` classes of `logits`."""
    top = logits.topk(min(top_k, logits.shape[1]), dim=1).indices
    return (top == reference.reshape(-1, 1).to(top.device)).any(dim=1)


def apop(
    model: ModelGraph,
    inputs: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    fill: Fill = "zeros",
    relu_after: bool = False,
    top_k: int = 1,
    batch_size: int = 64,
    seed: int = 0,
) -> ApopResult:
    """APOP accuracy of `model` on `inputs` [Han2024, Appendix D]: record each batch's
    activation pattern, predict from a `fill` input under that pattern, and compare with
    `labels` (or, without labels, with the original predictions). `seed` seeds the "normal"
    fill (a local generator; the global RNG is untouched)."""
    if fill not in ("zeros", "ones", "normal"):
        raise RelevanceError(
            f"unknown APOP fill {fill!r}", 'use fill = "zeros" | "ones" | "normal"'
        )
    gm = model.gm
    if not any(
        n.op == "call_function" and n.target in RELU_OPS | MAX_POOL_OPS for n in gm.graph.nodes
    ):
        raise RelevanceError(
            "APOP needs a model with ReLU or max-pool operations; this graph has none",
            "audit a ReLU network, or skip the APOP check for this model",
        )
    generator = torch.Generator().manual_seed(seed)
    original, replayed = [], []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        pattern, logits = record_pattern(gm, batch)
        original.append(logits)
        empty = fill_like(batch, fill, generator)
        replayed.append(pattern_forward(gm, pattern, empty, relu_after=relu_after))
    original_logits, apop_logits = torch.cat(original), torch.cat(replayed)
    original_predictions = original_logits.argmax(dim=1)
    reference = original_predictions if labels is None else labels
    original_accuracy = None
    if labels is not None:
        original_accuracy = _hits(original_logits, labels, top_k).float().mean().item()
    return ApopResult(
        fill=fill,
        relu_after=relu_after,
        top_k=top_k,
        accuracy=_hits(apop_logits, reference, top_k).float().mean().item(),
        original_accuracy=original_accuracy,
        predictions=apop_logits.argmax(dim=1),
        original_predictions=original_predictions,
    )
