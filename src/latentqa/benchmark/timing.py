"""Timing that holds on a loaded machine: every repeat times every task once, in rotating order, so a burst of load
lands on all contenders alike instead of on whichever ran then; every figure is a median with its spread."""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

WIDE_SPREAD = 0.15  # (max - min) / median of a ratio above this is reported as a warning


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def is_wide(figure: dict[str, float]) -> bool:
    return (figure["max"] - figure["min"]) > WIDE_SPREAD * figure["median"]


def interleaved(tasks: dict[str, Callable[[], object]], *, warmup: int, repeats: int,
                sync: Callable[[], None]) -> dict[str, list[float]]:
    """Seconds of each task in each repeat, after `warmup` untimed rounds. Repeat r starts with task r (mod the
    number of tasks) and goes round, so no task always runs first, or always right after the same one."""
    names = list(tasks)
    for _ in range(warmup):
        for name in names:
            tasks[name]()
            sync()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            tasks[name]()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak CUDA memory allocated while `fn` runs, above what was allocated before. None on CPU: the CPU allocator
    keeps freed pages for reuse, so resident-memory deltas after the first measurement read as ~0 and mislead."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - start) / 2**20


def machine(device: torch.device) -> dict:
    """What the figures depend on besides the code: the processor, threads and library versions."""
    import accelerate
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        cpuinfo = Path("/proc/cpuinfo")
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")] if cpuinfo.exists() else []
        name = models[0] if models else platform.processor() or platform.machine()
    return {"device": device.type, "name": name, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__}


def contender_tasks(name: str, reader, batch: dict) -> dict[str, Callable[[], object]]:
    """A training step (forward + backward) and greedy generation of exactly 16 tokens, as timed tasks."""
    def train_step():
        reader.train()
        reader(batch).loss.backward()
        reader.zero_grad(set_to_none=True)

    @torch.no_grad()
    def generation():
        reader.eval()
        reader.generate(batch, max_new_tokens=16, min_new_tokens=16, do_sample=False)

    return {f"{name}/train": train_step, f"{name}/generate": generation}
