"""Fast, deterministic training of the demo's detectors: :class:`~auditor.model.zoo.SmallResNet`
(the default), or for the kit's controls across architectures :class:`~auditor.model.zoo.SmallVGG`
(no BatchNorm) and :class:`~auditor.model.zoo.SmallHardSwishNet` (signed activations)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from auditor.model.zoo import SmallHardSwishNet, SmallResNet, SmallVGG

MEAN = (0.5, 0.5, 0.5)
"""Per-channel mean of the input normalisation ``(x / 255 - MEAN) / STD``."""
STD = (0.5, 0.5, 0.5)
"""Per-channel standard deviation of the input normalisation."""
ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet": lambda classes, width: SmallResNet(num_classes=classes, width=width),
    "vgg": lambda classes, width: SmallVGG(num_classes=classes, widths=(width, 2 * width, 4 * width)),
    "hardswish": lambda classes, width: SmallHardSwishNet(
        num_classes=classes, widths=(width, 2 * width, 4 * width)
    ),
}
"""The detectors `train_classifier` builds, by name: (classes, width) -> an untrained model."""


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """Turn uint8 images ``N x H x W x 3`` into normalised float32 ``N x 3 x H x W``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


@contextlib.contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    """Run the block with deterministic algorithms on ``threads`` intra-op threads.

    CPU convolutions reduce in a thread-count dependent order, so a fixed thread count
    makes the weights identical across machines. Restores both settings afterwards.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[float], object]]:
    """Yield ``advance(loss)``: steps a rich progress bar when ``enabled``, else does nothing."""
    if not enabled:
        yield lambda loss: None
        return
    from rich.progress import Progress

    with Progress(*Progress.get_default_columns(), "loss {task.fields[loss]:.3f}") as bar:
        task = bar.add_task("training", total=total, loss=float("nan"))
        yield lambda loss: bar.update(task, advance=1, loss=loss)


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    epochs: int = 4,
    batch_size: int = 64,
    width: int = 8,
    num_classes: int = 2,
    lr: float = 3e-3,
    threads: int = 1,
    progress: bool = False,
    architecture: str = "resnet",
) -> nn.Module:
    """Train a detector of `architecture` (a key of :data:`ARCHITECTURES`) on uint8 ``N x H x W x 3`` images; return it in eval mode.

    Adam on cross-entropy over shuffled mini-batches drawn from a seeded generator, with
    deterministic algorithms on ``threads`` threads: the same inputs, ``seed`` and ``threads``
    give the same weights. One thread is the default because it is reproducible everywhere
    and, on a shared 2-core machine, several times faster than two oversubscribed threads.
    ``progress`` shows a rich progress bar with the running loss.
    """
    torch.manual_seed(seed)
    x = to_tensor(images)
    y = torch.as_tensor(labels, dtype=torch.int64)
    model = ARCHITECTURES[architecture](num_classes, width)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    steps = epochs * -(-len(x) // batch_size)
    with _deterministic(threads), _progress_bar(progress, steps) as advance:
        model.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(x), generator=order).split(batch_size):
                loss = loss_fn(model(x[batch]), y[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                advance(loss.item())
    return model.eval()
