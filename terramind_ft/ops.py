"""Small tensor operations shared by tasks, inference and generation."""

from __future__ import annotations

import torch


def class_ids(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The index of the largest value along ``dim`` (the first one on ties), as ``argmax`` would give it.

    ``Tensor.argmax`` over the channel dimension of an NCHW map is 50-80x slower on CPU than ``max(dim).indices``
    (178 ms vs 3 ms for a [4, 2, 512, 512] map on the 2-core CPU): it cost 10 % of a Sen1Floods11 training step.
    Both return the first maximal index, so the results are identical.
    """
    return logits.max(dim=dim).indices
