"""`benchmark/timing.py`: every repeat times every task once in a rotating order; figures as medians with their
spread; the machine the figures depend on."""
import os

import torch

from latentqa.benchmark.timing import interleaved, is_wide, machine, spread


def test_interleaved_timing_rotates_the_order():
    calls = []
    tasks = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = interleaved(tasks, warmup=1, repeats=3, sync=lambda: None)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(v) == 3 for v in seconds.values())


def test_a_spread_is_a_median_with_its_range_and_wide_past_15_percent():
    figure = spread([3.0, 1.0, 2.0, 10.0])
    assert figure == {"median": 2.5, "min": 1.0, "max": 10.0} and is_wide(figure)
    assert not is_wide(spread([1.0, 1.1, 1.05]))


def test_the_machine_names_the_cpu_threads_and_versions():
    figures = machine(torch.device("cpu"))
    assert figures["device"] == "cpu" and figures["cpu_cores"] == os.cpu_count() and figures["name"]
    assert figures["torch"] == torch.__version__ and figures["torch_threads"] == torch.get_num_threads()
