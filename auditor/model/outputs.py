"""What the audited scores are: class logits, also for a model that ends in Softmax or Sigmoid.

Relevance, dropout margins and logit drops are defined on the logits: LRP explains a logit
[Montavon2019], and a probability saturates (a top-k dropout that halves a logit of 12 leaves its
softmax near 1). A model that returns probabilities is audited on the scores before its final
Softmax / Sigmoid, its logits, when the graph ends in one (`auto`, `probabilities`); a model
declared to return probabilities without such an ending is audited on their logarithm
(log-probabilities: the logits up to a per-sample constant for a softmax).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import fx

from auditor.model.ops import SOFTMAX_OPS

aten = torch.ops.aten

#: how the config declares the model's output (`model.outputs`)
Outputs = Literal["auto", "logits", "probabilities"]
PROBABILITY_OPS = {**{op: "Softmax" for op in SOFTMAX_OPS}, aten.sigmoid.default: "Sigmoid"}
LOGITS = "logits"
#: smallest probability the log-probabilities read (log 0 would be -inf)
MIN_PROBABILITY = 1e-12


def audited_scores(gm: fx.GraphModule, outputs: Outputs) -> str:
    """Rewrite `gm` (in place) to return the scores the audit measures, and say what they are:
    `logits` (unchanged), `logits before the final Softmax` (or Sigmoid: the ending removed) or
    `log-probabilities` (a log appended)."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    last = output.args[0]
    ending = PROBABILITY_OPS.get(last.target) if isinstance(last, fx.Node) else None
    if outputs == "logits":
        return LOGITS
    if ending is not None:
        output.args = (last.args[0],)
        gm.graph.erase_node(last)
        gm.recompile()
        return f"logits before the final {ending}"
    if outputs == "auto":
        return LOGITS
    with gm.graph.inserting_before(output):
        clamped = gm.graph.call_function(aten.clamp_min.default, (last, MIN_PROBABILITY))
        log = gm.graph.call_function(aten.log.default, (clamped,))
    for node in (clamped, log):
        node.meta["nn_module_stack"] = dict(last.meta.get("nn_module_stack") or {})
    output.args = (log,)
    gm.recompile()
    return "log-probabilities"
