"""LRP composites [Montavon2019, Kohlbrenner2020]: which rule each weighted operation gets, and
the `COMPOSITES` registry of their builders (built-ins and plug-ins)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from auditor.errors import RelevanceError
from auditor.registry import Registry
from auditor.relevance.rules import Bound, Epsilon, Flat, Gamma, Rule, ZBox, ZPlus

#: attention rules of a composite: CP-LRP [Ali2022] or AttnLRP [Achtibat2024]
CONSERVATIVE, ATTNLRP = "conservative", "attnlrp"


@dataclass(frozen=True)
class Composite:
    """Which rule each weighted operation gets: `input_layer` for the model's first weighted
    operation (when set), `conv` / `dense` for the others ([Montavon2019, Kohlbrenner2020]:
    rules chosen per layer). `epsilon` stabilises the weight-free operations
    (pooling, sums, gated products, LayerNorm).

    `attention` picks the rules inside attention: `conservative` (CP-LRP [Ali2022]: the softmax
    output is held constant, the values get all relevance) or `attnlrp` ([Achtibat2024]: the
    uniform rule on matrix products of two input-dependent operands and the softmax rule,
    `auditor.relevance.transformer_rules`)."""

    name: str
    conv: Rule
    dense: Rule
    epsilon: float
    input_layer: Rule | None = None
    attention: str = CONSERVATIVE

    def rule(self, kind: str, first: bool) -> Rule:
        if first and self.input_layer is not None:
            return self.input_layer
        return self.conv if kind == "conv" else self.dense


@dataclass(frozen=True)
class RuleParams:
    """Parameters a composite builds its rules from; `mean` / `std` are the input
    normalisation that gives the zB bounds."""

    epsilon: float = 1e-6
    gamma: float = 0.25
    mean: Bound = 0.0
    std: Bound = 1.0


def check_composite_builder(name: str, build: Callable[[RuleParams], Composite]) -> None:
    """The `COMPOSITES` validity check: a function of `RuleParams` returning the `Composite`,
    whose docstring's first line describes it."""
    if not callable(build):
        raise TypeError(f"LRP composite '{name}': {build!r} is not callable")
    if not (build.__doc__ or "").strip():
        raise TypeError(f"LRP composite '{name}' needs a docstring (its first line describes it)")


#: composite builders by name: built-ins below, plug-ins in the entry point group
#: `relevance_auditor.composites` (README, "Extending the auditor")
COMPOSITES: Registry[Callable[[RuleParams], Composite]] = Registry(
    "LRP composite", "relevance_auditor.composites", check_composite_builder
)


@COMPOSITES.register("epsilon")
def _epsilon(p: RuleParams) -> Composite:
    """LRP-epsilon on every layer"""
    return Composite("epsilon", Epsilon(epsilon=p.epsilon), Epsilon(epsilon=p.epsilon), p.epsilon)


@COMPOSITES.register("epsilon_plus")
def _epsilon_plus(p: RuleParams) -> Composite:
    """z+ on convolutions, epsilon on dense layers"""
    return Composite(
        "epsilon_plus",
        Gamma(gamma=math.inf, epsilon=p.epsilon),
        Epsilon(epsilon=p.epsilon),
        p.epsilon,
    )


@COMPOSITES.register("epsilon_gamma_box")
def _epsilon_gamma_box(p: RuleParams) -> Composite:
    """zB on the input layer, gamma on other convolutions, epsilon on dense layers"""
    return Composite(
        "epsilon_gamma_box",
        Gamma(gamma=p.gamma, epsilon=p.epsilon),
        Epsilon(epsilon=p.epsilon),
        p.epsilon,
        input_layer=ZBox.from_normalization(p.mean, p.std, p.epsilon),
    )


@COMPOSITES.register("epsilon_plus_flat")
def _epsilon_plus_flat(p: RuleParams) -> Composite:
    """flat on the input layer, z+ on other convolutions, epsilon on dense layers"""
    return Composite(
        "epsilon_plus_flat",
        Gamma(gamma=math.inf, epsilon=p.epsilon),
        Epsilon(epsilon=p.epsilon),
        p.epsilon,
        input_layer=Flat(epsilon=p.epsilon),
    )


@COMPOSITES.register("alpha1beta0")
def _alpha1beta0(p: RuleParams) -> Composite:
    """alpha1-beta0 (z+) on every convolution and dense layer"""
    return Composite("alpha1beta0", ZPlus(epsilon=p.epsilon), ZPlus(epsilon=p.epsilon), p.epsilon)


@COMPOSITES.register("attnlrp")
def _attnlrp(p: RuleParams) -> Composite:
    """AttnLRP for transformers: epsilon on every layer, uniform rule on attention products, softmax rule"""
    return Composite(
        "attnlrp", Epsilon(epsilon=p.epsilon), Epsilon(epsilon=p.epsilon), p.epsilon,
        attention=ATTNLRP,
    )  # fmt: skip


def composites() -> dict[str, str]:
    """Composite names with a one-line description each (its builder's docstring)."""
    return {name: build.__doc__.strip().splitlines()[0] for name, build in COMPOSITES.items()}


def composite(
    name: str, epsilon: float = 1e-6, *, gamma: float = 0.25, mean: Bound = 0.0, std: Bound = 1.0
) -> Composite:
    """The composite `name` (see `composites()`) built with the given rule parameters."""
    if name not in COMPOSITES:
        raise RelevanceError(
            f"unknown LRP composite '{name}'", f"use one of: {', '.join(COMPOSITES.names())}"
        )
    build = COMPOSITES.get(name)
    return build(RuleParams(epsilon=epsilon, gamma=gamma, mean=mean, std=std))
