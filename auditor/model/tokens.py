"""Token layers of transformers, seen by the audit as channels over space.

A layer whose output is `N x T x D` (T tokens of D features, as in a Vision Transformer
[Dosovitskiy2021]) is a *token layer*. Its channels are the D embedding dimensions: the cut
graph hands the audit the activation channels first, `N x D x T` (`ModelGraph.split` ends the
trunk and starts the head with a transpose of dimensions 1 and 2), so that
channel relevance, channel means, gallery scores and channel dropout treat a token like a
spatial position. The first `T - g^2` tokens are prefix tokens (the class token), the others
the `g x g` patch grid in row-major order (square grids only).

* channel relevance `R[c]` sums over every token, the class token included (at the last block
  the head reads only the class token, so that is where the relevance lies);
* dropping channel c zeroes feature c of every token, the class token included (zeroing only
  the patch tokens would leave a class-token head untouched);
* the spatial map of a channel places the patch tokens on their grid (`patch_grid`), upsampled
  to the image: the region of a patch token is its patch (`patch_box`): attention mixes all
  tokens, so the receptive field of any token after the first block is the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

#: rank of a token layer's output (N x T x D)
TOKEN_RANK = 3


def grid_side(tokens: int) -> int:
    """The side g of the patch grid of a layer of `tokens` tokens (`tokens - g^2` prefix
    tokens)."""
    return math.isqrt(tokens)


def patch_grid(values: torch.Tensor) -> torch.Tensor:
    """`... x T` per-token values as `... x g x g`: the patch tokens on their grid, the prefix
    tokens (class token) left out."""
    side = grid_side(values.shape[-1])
    patches = values[..., values.shape[-1] - side * side :]
    return patches.reshape(*values.shape[:-1], side, side)


def patch_box(position: tuple[int, int], side: int, image: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) in pixels of the patch at grid `position` of a `side x side`
    grid over an image of height x width `image` (bottom and right exclusive)."""
    (row, column), (height, width) = position, image
    return (
        row * height // side, column * width // side,
        (row + 1) * height // side, (column + 1) * width // side,
    )  # fmt: skip
