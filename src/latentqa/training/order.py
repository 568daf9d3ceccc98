"""What makes a resume exact: the data order and the dropout seeds depend on (seed, epoch, micro-batch, rank)
alone, never on how the run got there."""
from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """A fresh permutation each epoch, drawn from (seed, epoch) alone: the same order after any resume."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.size).tolist())

    def __len__(self):
        return self.size


def dropout_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, batch, rank]).generate_state(1)[0])
