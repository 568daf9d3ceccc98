"""Run state: where training is. Saved with every checkpoint; never written into the config."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass
class RunState:
    epoch: int = 0
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # micro-batches of this process consumed in the current epoch
    best_value: float | None = None
    best_step: int | None = None
    evaluated_step: int | None = None  # the last step evaluated (and recorded in metrics.jsonl)
    nonfinite_streak: int = 0
    nonfinite_total: int = 0

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def improves(self, value: float, higher_is_better: bool) -> bool:
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if higher_is_better else value < self.best_value
