"""Pre-flight: every input of an audit is checked against the model before the first pass, so
that a bad one fails in seconds as one `AuditorError` line instead of after the passes."""

from __future__ import annotations

import numpy as np
import torch

from auditor.config import AuditConfig
from auditor.data.samples import SampleSet, normalize
from auditor.errors import SampleError
from auditor.model.graph import ModelGraph, SplitModel


def check_inputs(graph: ModelGraph, split: SplitModel, samples: SampleSet, config: AuditConfig) -> None:
    """The samples fit the model and their labels are classes it can predict."""
    logits = check_fit(graph, split, samples, config)
    check_labels(samples, logits.shape[1])


def check_fit(
    graph: ModelGraph, split: SplitModel, samples: SampleSet, config: AuditConfig
) -> torch.Tensor:
    """Fail early, with the sample size in the message, when the samples do not fit the model:
    another size than the one the graph was exported for, or a forward pass that fails. Returns
    the logits of the first two samples."""
    shape = tuple(samples.images.shape[1:])
    size = "x".join(str(s) for s in shape)
    expected = graph.input_shape
    fix = "set preprocess.size to the model's input size"
    if expected is not None and any(e is not None and e != s for e, s in zip(expected, shape)):
        wanted = "x".join("?" if e is None else str(e) for e in expected)
        raise SampleError(
            f"samples of size {size} do not fit model {config.model.uri}, which takes {wanted}", fix
        )
    batch = normalize(torch.from_numpy(samples.images[:2]), config.preprocess)
    try:
        with torch.no_grad():
            return split.head(split.trunk(batch))
    except Exception as err:  # shape errors surface as several exception types
        raise SampleError(
            f"samples of size {size} do not fit model {config.model.uri}: "
            f"{str(err).splitlines()[0]}",
            fix,
        ) from err


def check_labels(samples: SampleSet, n_outputs: int) -> None:
    """Every known label (>= 0) is one of the model's `n_outputs` classes: a label it cannot
    predict would count as an error of every sample and get a per-class recall of its own."""
    labels = np.asarray(samples.labels)
    bad = labels >= n_outputs
    if not bad.any():
        return
    sets = np.asarray(samples.set_names)[bad]
    named = ", ".join(dict.fromkeys(sets.tolist()))
    values = ", ".join(str(v) for v in np.unique(labels[bad])[:5])
    raise SampleError(
        f"sample set {named} has labels {values} but the model has {n_outputs} outputs "
        f"(classes 0..{n_outputs - 1})",
        "use labels the model predicts (0-based class indices), -1 for unknown",
    )
