"""LRP rules for attention [Achtibat2024] (LayerNorm's rule is `rules.layer_norm`): the
bilinear matrix product of attention and softmax. Each is a `Term` of
`auditor.relevance.rules` (the activation times the sensitivity of a modified operation),
so it runs in the one backward pass of the LRP engine.

* A matrix product `O = A B` of two input-dependent operands (attention's `q k^T` and `A v`):
  the epsilon rule over the bilinear terms `A_ji B_ip`, each term's share split uniformly
  between its two factors ([Achtibat2024, Prop. 3.3]: epsilon then uniform rule),
  `R_A = A * (R / stab(O)) B^T / 2`, `R_B = B * A^T (R / stab(O)) / 2`; conservative.
* softmax `s = softmax(x)`: `R_x = x * (R - s * sum_j R_j)` [Achtibat2024, Prop. 3.1], which
  is `x * J^T (R / s)`, the epsilon rule with the output as denominator (the bias term of the
  linearisation is dropped: not conservative).
"""

from __future__ import annotations

import torch

from auditor.relevance.rules import Op, Term, propagate, redistribute


def uniform_product(op: Op, a: torch.Tensor, b: torch.Tensor, epsilon: float) -> torch.Tensor:
    """`op(a, b)` (a matrix product) with the epsilon-then-uniform rule of [Achtibat2024,
    Prop. 3.3]: each factor receives half of every bilinear term's share."""
    return propagate([Term(op, (a, b), (0, 1), coefficient=0.5)], epsilon, (a, b))


def softmax_rule(op: Op, x: torch.Tensor, epsilon: float) -> torch.Tensor:
    """`op(x)` (a softmax) with the softmax rule `R_x = x * (R - s sum R)` [Achtibat2024,
    Prop. 3.1]."""
    return redistribute(op, [x], epsilon)
