"""Pooling token or sentence values into groups: the one mean and the one maximum every part uses."""
from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the kept positions: values (B, L, H), mask (B, L) → (B, H); all-masked rows give 0. The sentence
    embedding of all-MiniLM-style encoders."""
    weights = mask[..., None].to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)


def group_mean(values: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, groups: int) -> torch.Tensor:
    """Mean of `values` (B, L, H) over the positions of each group, index (B, L) → (B, groups, H); masked-out
    positions count nowhere, an empty group is 0."""
    weights = mask.to(values.dtype)[..., None]  # (B, L, 1)
    sums = values.new_zeros(values.shape[0], groups, values.shape[-1])
    sums.scatter_add_(1, index[..., None].expand_as(values), values * weights)
    counts = values.new_zeros(values.shape[0], groups, 1).scatter_add_(1, index[..., None], weights)
    return sums / counts.clamp_min(1)


def group_max(values: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, groups: int,
              empty: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group, the largest of its kept values, and which groups have any: values (B, S) or (B, S, F), index and
    mask (B, S) → (B, groups[, F]) with `empty` where a group has none, (B, groups) bool. With index = each
    sentence's paragraph: each paragraph's best sentence."""
    extra = values.shape[2:]
    spread = index.reshape(*index.shape, *(1,) * len(extra)).expand_as(values)
    kept = values.masked_fill(~mask.reshape(*mask.shape, *(1,) * len(extra)), empty)
    best = values.new_full((values.shape[0], groups, *extra), empty).scatter_reduce(1, spread, kept, "amax")
    present = mask.new_zeros(mask.shape[0], groups).scatter_reduce(1, index, mask, "amax")
    return best, present
