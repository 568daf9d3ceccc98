"""The disk fills while a checkpoint or the best reader is written: the run stops with one line naming the step and
the last whole checkpoint, nothing published before is touched, and `--resume` (space freed) ends as a run that
never failed."""
import errno
import json
import re

import pytest
import safetensors.torch
import torch
from accelerate import Accelerator

from latentqa.cli import main
from latentqa.readers.latent import LatentReader
from latentqa.readers.loading import load_reader_folder
from latentqa.training import trainer
from tests.training.test_trainer import _config_file

OVERRIDES = ("train.epochs=2", "train.save_every_steps=1", "train.keep_last=10", "train.best_metric=loss")


def _weights(folder):
    return safetensors.torch.load_file(str(folder / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    """The same weights; a checkpoint leaves out the tensors tied to others, a reader folder may keep them."""
    common = a.keys() & b.keys()
    return len(common) >= min(len(a), len(b)) - 2 and all(torch.equal(a[k], b[k]) for k in common)


def _fill_disk_on(monkeypatch, cls, method, after_calls: int):
    """From call `after_calls` + 1 on, `cls.method` writes its files, then cuts the largest short and fails as a full
    disk would."""
    real, calls = getattr(cls, method), [0]

    def writer(self, folder, *args, **kwargs):
        calls[0] += 1
        real(self, folder, *args, **kwargs)
        if calls[0] > after_calls:
            from pathlib import Path
            largest = max(Path(folder).rglob("*.safetensors"), key=lambda p: p.stat().st_size)
            largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cls, method, writer)


class _RowsFillTheDisk:
    """`open` for the trainer's module: from the `after_rows` + 1-th metrics row on, half the row is written, then
    the disk is full."""

    def __init__(self, after_rows: int):
        self.rows, self.after_rows = 0, after_rows

    def __call__(self, path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        if not str(path).endswith("metrics.jsonl") or "a" not in mode:
            return handle
        self.rows += 1
        if self.rows > self.after_rows:
            write = handle.write

            def half_then_full(text):
                write(text[: len(text) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            handle.write = half_then_full
        return handle


@pytest.mark.slow
@pytest.mark.parametrize("what", ["checkpoint", "best reader", "metrics row"])
def test_a_full_disk_stops_in_one_line_and_loses_nothing(tiny_models, tmp_path, monkeypatch, capsys, what):
    config, reference = _config_file(tiny_models, tmp_path, "reference", *OVERRIDES)
    assert main(["train", "--config", str(config)]) == 0
    config, run = _config_file(tiny_models, tmp_path, "full", *OVERRIDES)
    with monkeypatch.context() as patch:
        if what == "checkpoint":  # steps 1-5 saved, step 6 fails
            _fill_disk_on(patch, Accelerator, "save_state", after_calls=5)
            failed_step, last_whole = 6, "step-00000005"
        elif what == "best reader":  # the best reader of epoch 1 (step 4) saved, epoch 2's (step 8) fails
            _fill_disk_on(patch, LatentReader, "save_pretrained", after_calls=1)
            failed_step, last_whole = 8, "step-00000008"
        else:  # 4 training rows and epoch 1's evaluation written, the 6th row cut short
            patch.setattr(trainer, "open", _RowsFillTheDisk(after_rows=5), raising=False)
            failed_step, last_whole = 5, None
        capsys.readouterr()
        assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"latentqa: error: step {failed_step}: cannot write") and "No space left" in err, err
    last_whole = last_whole or re.search(r"the last checkpoint, (step-\d+), is whole", err)[1]
    assert f"the last checkpoint, {last_whole}, is whole" in err and "--resume" in err, err
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert left == [f"step-{s:08d}" for s in range(1, int(last_whole.removeprefix("step-")) + 1)], left  # no temporary folder
    assert not (run / "best.tmp").exists()
    assert _same(_weights(run / "checkpoints" / "step-00000004"), _weights(run / "best"))  # epoch 1's, untouched
    load_reader_folder(run / "best")

    assert main(["train", "--config", str(config), "--resume"]) == 0  # space freed
    last = "checkpoints/step-00000008"
    assert _same(_weights(reference / last), _weights(run / last))
    assert _same(_weights(reference / "best"), _weights(run / "best"))
    rows = lambda folder: [(r["kind"], r["step"]) for r in map(json.loads, (folder / "metrics.jsonl").open())]
    assert rows(run) == rows(reference)
