"""Cost of channel dropout validation (issue "Checks that find shortcuts": top-k, random-k with
5 repeats and bottom-k at the last conv block cost at most 2x one plain forward pass over the
same samples; the naive way is 7 full forward passes).

Model: `auditor.model.zoo.SmallResNet(width=32, blocks=(2, 2, 2, 2))`, 64 x 64 inputs, 256 samples,
batch 64, one CPU thread, the default layer (output of the last residual stage).

* `forward`: one plain forward pass of the whole model over the samples;
* `cached`: the trunk once, then the head alone for each of the 7 conditions on the layer's
  activations held in memory (`auditor.checks.dropout.dropout_validation` measuring through
  `cached_logits`);
* `streamed`: what an audit runs: `auditor.audit.passes.dropout_pass` on the local executor (images
  read batch by batch, the trunk once per batch, the 7 conditions through the head in one
  stacked call, no activations kept), then `dropout_validation` on its logits;
* `naive`: 7 full forward passes with a channel mask applied at the layer.

Ratios of median CPU times, the cases interleaved in one process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from auditor.audit.passes import Condition, cached_logits, dropout_pass
from auditor.audit.worker import WorkerModel
from auditor.checks.dropout import (
    dropout_validation,
    random_channel_sets,
    rank_channels,
)
from auditor.config import Preprocess
from auditor.data.images import ArrayImages
from auditor.execution import LocalExecutor
from auditor.model.graph import ModelGraph
from auditor.model.zoo import SmallResNet
from benchmarks.timing import median_seconds

N, BATCH, SIZE, WIDTH, BLOCKS, CLASSES, REPEATS_RANDOM = 256, 64, 64, 32, (2, 2, 2, 2), 10, 5
WARMUP, REPEATS = 1, 3
TARGET = 2.0
COMMAND = ".venv/bin/python -m benchmarks.run dropout_validation_cost"


def dropout_validation_cost() -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = SmallResNet(num_classes=CLASSES, width=WIDTH, blocks=BLOCKS).eval()
        images = torch.rand(N, 3, SIZE, SIZE)
        graph = ModelGraph.from_module(model, images[:2])
        split = graph.split(graph.default_layer())
        labels = np.full(N, -1)
        with torch.no_grad():
            channels = split.trunk(images[:2]).shape[1]
        k = channels // 5
        relevance = np.random.default_rng(0).random(channels)
        top, bottom = rank_channels(relevance, k)
        randoms = random_channel_sets(channels, k, top, REPEATS_RANDOM, seed=0)
        conditions = [[], top, *randoms, bottom]

        def forward() -> None:
            with torch.no_grad():
                for batch in images.split(BATCH):
                    graph.gm(batch)

        def cached() -> None:
            with torch.no_grad():
                activations = torch.cat([split.trunk(b) for b in images.split(BATCH)])
            dropout_validation(
                cached_logits(split.head, activations, BATCH),
                labels,
                top_k=top,
                bottom_k=bottom,
                random_sets=randoms,
            )

        worker = WorkerModel(split, Preprocess(mean=(0, 0, 0), std=(1, 1, 1)), "epsilon", 1e-6)
        source = ArrayImages(images.numpy())
        predicted = np.zeros(N, dtype=np.int64)

        def streamed() -> None:
            dropped = dropout_pass(
                LocalExecutor(), worker, source, [Condition(tuple(d)) for d in conditions],
                predicted, CLASSES, BATCH,
            )
            dropout_validation(
                dropped.of(None), labels, top_k=top, bottom_k=bottom, random_sets=randoms
            )

        def naive() -> None:
            with torch.no_grad():
                for drop in conditions[1:]:
                    mask = torch.ones(channels)
                    mask[drop] = 0
                    for batch in images.split(BATCH):
                        split.head(split.trunk(batch) * mask.reshape(1, -1, 1, 1))

        seconds = median_seconds(
            {"forward": forward, "cached": cached, "streamed": streamed, "naive": naive},
            warmup=WARMUP, repeats=REPEATS,
        )
    finally:
        torch.set_num_threads(threads)
    cpu = {name: t["cpu"] for name, t in seconds.items()}
    return {
        "command": COMMAND,
        "model": f"SmallResNet(width={WIDTH}, blocks={BLOCKS}), layer {split.layer}, k={k}",
        "samples": N,
        "conditions": len(conditions),
        "forward_s": round(cpu["forward"], 4),
        "cached_dropout_s": round(cpu["cached"], 4),
        "streamed_dropout_s": round(cpu["streamed"], 4),
        "naive_dropout_s": round(cpu["naive"], 4),
        "cached_ratio": round(cpu["cached"] / cpu["forward"], 3),
        "streamed_ratio": round(cpu["streamed"] / cpu["forward"], 3),
        "streamed_vs_naive": round(cpu["streamed"] / cpu["naive"], 3),
        "naive_ratio": round(cpu["naive"] / cpu["forward"], 3),
        "target_ratio": TARGET,
        "meets_target": max(cpu["cached"], cpu["streamed"]) / cpu["forward"] <= TARGET,
    }
