"""SIGKILL inside the publishing of checkpoints, of the best reader and of the summary, then `--resume`: the run
ends bit-identical to one never killed, with `best/` in place and every metrics row once."""
import json
import os
import random
import subprocess
import sys
import time

import pytest
import safetensors.torch
import torch

from latentqa.readers.loading import load_reader_folder
from tests.training.test_trainer import _config_file

# Runs the CLI with `atomic`'s renames logged to $RENAMES_LOG, SIGKILLing itself at rename number $KILL_AT (1-based)
# or $KILL_AFTER_S seconds after it started.
KILLER = """
import json, os, signal, sys, threading, types
if float(os.environ.get("KILL_AFTER_S", 0)):
    threading.Timer(float(os.environ["KILL_AFTER_S"]), os.kill, (os.getpid(), signal.SIGKILL)).start()
import latentqa.atomic as atomic
real, calls, kill_at, log = os.replace, [0], int(os.environ.get("KILL_AT", 0)), os.environ["RENAMES_LOG"]
def replace(src, dst):
    calls[0] += 1
    with open(log, "a") as f:
        f.write(json.dumps([os.path.basename(src), os.path.basename(dst)]) + "\\n")
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
atomic.os = types.ModuleType("os")
atomic.os.__dict__.update(os.__dict__)
atomic.os.replace = replace
from latentqa.cli import main
sys.exit(main(sys.argv[1:]))
"""
OVERRIDES = ("train.epochs=2", "train.save_every_steps=1", "train.best_metric=loss")


def _train(config, log, *flags, kill_at=0, kill_after_s=0.0):
    env = {**os.environ, "RENAMES_LOG": str(log), "KILL_AT": str(kill_at), "KILL_AFTER_S": str(kill_after_s)}
    return subprocess.run([sys.executable, "-c", KILLER, "train", "--config", str(config), *flags], env=env,
                          capture_output=True, text=True)


def _rows(run):
    return [(row["kind"], row["step"]) for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def _weights(folder):
    return safetensors.torch.load_file(str(folder / "model.safetensors"))


def _moments(renames):
    """1-based rename numbers to kill at: each kind of moment once."""
    pick = {}
    for number, (src, dst) in enumerate(renames, 1):
        moment = ("best: old version aside" if dst == "best.old" else
                  "best: new version in place" if src == "best.new" else
                  "epoch-end checkpoint complete, not yet named" if dst == "step-00000004.new" else
                  "epoch-end checkpoint named" if src == "step-00000004.new" else
                  "mid-epoch checkpoint named" if src == "step-00000003.new" else
                  "summary" if dst == "summary.json" else None)
        if moment:
            pick.setdefault(moment, number)
    return pick


@pytest.mark.slow
@pytest.mark.parametrize("keep_last", [1, 2])
def test_killed_inside_every_kind_of_publish_then_resumed_is_bit_identical(tiny_models, tmp_path, keep_last):
    overrides = (*OVERRIDES, f"train.keep_last={keep_last}")
    config, reference = _config_file(tiny_models, tmp_path, "reference", *overrides)
    log = tmp_path / "reference.renames"
    assert _train(config, log).returncode == 0
    renames = [json.loads(line) for line in log.read_text().splitlines()]
    moments = _moments(renames)
    assert len(moments) == 6, moments  # the run has each kind of moment
    steps = json.loads((reference / "summary.json").read_text())["steps"]
    final, best = _weights(reference / "checkpoints" / f"step-{steps:08d}"), _weights(reference / "best")
    if keep_last == 2:  # where the number kept matters: which checkpoint a kill at the epoch's end falls back to
        moments = {m: n for m, n in moments.items() if m.startswith("epoch-end")}
    for moment, kill_at in moments.items():
        config, run = _config_file(tiny_models, tmp_path, f"killed-{kill_at}", *overrides)
        killed = _train(config, tmp_path / f"{kill_at}.renames", kill_at=kill_at)
        assert killed.returncode == -9, (moment, killed.stderr[-2000:])
        resumed = _train(config, tmp_path / f"{kill_at}.resumed", "--resume")
        assert resumed.returncode == 0, (moment, resumed.stderr[-2000:])
        got = _weights(run / "checkpoints" / f"step-{steps:08d}")
        assert all(torch.equal(final[k], got[k]) for k in final), moment
        assert all(torch.equal(best[k], v) for k, v in _weights(run / "best").items()), moment
        load_reader_folder(run / "best")
        assert _rows(run) == _rows(reference), moment  # every row once, in order
        assert json.loads((run / "summary.json").read_text()) == json.loads((reference / "summary.json").read_text())
        left = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert left == [f"step-{s:08d}" for s in range(steps - keep_last + 1, steps + 1)], (moment, left)


@pytest.mark.slow
def test_killed_at_random_moments_then_resumed_is_bit_identical(tiny_models, tmp_path):
    """Kills anywhere in the run (loading, a step, an evaluation, a save, before the first checkpoint), each followed
    by `--resume` until the run ends."""
    config, reference = _config_file(tiny_models, tmp_path, "reference", *OVERRIDES)
    started = time.perf_counter()
    assert _train(config, tmp_path / "reference.renames").returncode == 0
    seconds = time.perf_counter() - started
    steps = json.loads((reference / "summary.json").read_text())["steps"]
    final = _weights(reference / "checkpoints" / f"step-{steps:08d}")
    moments = random.Random(0).sample(range(5, 95), 4)  # % of the uninterrupted run's time
    kills = 0
    for percent in moments:
        config, run = _config_file(tiny_models, tmp_path, f"at-{percent}", *OVERRIDES)
        killed = _train(config, tmp_path / f"{percent}.renames", kill_after_s=seconds * percent / 100)
        kills += killed.returncode == -9
        assert killed.returncode in (0, -9), killed.stderr[-2000:]
        resumed = _train(config, tmp_path / f"{percent}.resumed", "--resume")
        assert resumed.returncode == 0, (percent, resumed.stderr[-2000:])
        got = _weights(run / "checkpoints" / f"step-{steps:08d}")
        assert all(torch.equal(final[k], got[k]) for k in final), percent
        assert all(torch.equal(v, _weights(reference / "best")[k]) for k, v in _weights(run / "best").items())
        assert _rows(run) == _rows(reference), percent
    assert kills >= 3, kills  # the moments fell inside the runs
