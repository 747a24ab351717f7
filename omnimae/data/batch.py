"""Batches are a tensor or a nest of tensors (e.g. pixels with channel ids): small helpers for both."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map


def to_device(x: Any, device: torch.device | str) -> Any:
    return tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, x)


def batch_size(x: Any) -> int:
    leaves = [t for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor)]
    return leaves[0].shape[0]
