import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from latentqa.config import ConfigError
from latentqa.training.config import load_config
from latentqa.readers.loading import load_reader_folder
from latentqa.readers.latent import LatentReader
from latentqa.resources import SAMPLE_PATH
from latentqa.training.trainer import NonFiniteLossError, TrainingInterrupted, train


def tiny_config(tiny_models, out, *overrides, kind="latent"):
    t5_dir, encoder_dir = tiny_models
    return load_config(None, [
        f"model.kind={kind}", f"model.t5={t5_dir}", f"model.encoder={encoder_dir}", "latent.num_latents=4",
        "latent.selector_heads=4", "baseline.max_input_tokens=96",
        "data.train_limit=8", "data.validation_limit=4", f"data.cache_dir={out / 'cache'}",
        f"train.output_dir={out / 'run'}", "train.epochs=2", "train.batch_size=2", "train.log_every_steps=1",
        "train.lr_latent=1e-3", "train.lr_t5=5e-4", "train.lr_encoder=2e-4", "train.warmup_ratio=0.25",
        "eval.batch_size=4", "eval.max_new_tokens=4", *overrides])


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_end_to_end_train_evaluate_save_best(tiny_models, tmp_path):
    run = train(tiny_config(tiny_models, tmp_path))
    assert {p.name for p in run.iterdir()} >= {"best", "checkpoints", "config.yaml", "metrics.jsonl", "summary.json",
                                               "tensorboard"}
    assert any((run / "tensorboard").iterdir())
    metrics = _metrics(run)
    evals = [m for m in metrics if m["kind"] == "eval"]
    assert [m["epoch"] for m in evals] == [1, 2] and [m["step"] for m in evals] == [4, 8]
    for m in evals:
        assert {"loss", "answer_loss", "support_loss", "em", "f1", "sp_f1", "joint_f1"} <= set(m)
        assert math.isfinite(m["loss"]) and m["count"] == 4
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["epochs"] == 2
    assert summary["best_value"] == min(m["loss"] for m in evals)
    # The learning-rate groups keep their ratios through warm-up and decay.
    for m in (m for m in metrics if m["kind"] == "train"):
        assert m["lr_latent"] == pytest.approx(2 * m["lr_t5"]) and m["lr_t5"] == pytest.approx(2.5 * m["lr_encoder"])
    assert max(m["lr_latent"] for m in metrics if m["kind"] == "train") == pytest.approx(1e-3)
    # The best reader is an ordinary reader folder, and the config used is saved.
    best = load_reader_folder(run / "best")
    assert isinstance(best, LatentReader) and best.gate.item() != 0.0
    assert load_config(run / "config.yaml").train.lr_latent == 1e-3
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000004", "step-00000008"]


@pytest.mark.slow
def test_frozen_t5_warm_start_then_unfreezes(tiny_models, tmp_path):
    run = train(tiny_config(tiny_models, tmp_path, "train.freeze_t5_steps=2", "train.save_every_steps=1",
                            "train.keep_last=10", "train.epochs=1"))

    def t5_weights(step):
        state = safetensors.torch.load_file(str(run / "checkpoints" / f"step-{step:08d}" / "model.safetensors"))
        return {k: v for k, v in state.items() if k.startswith("t5.")}, {k: v for k, v in state.items() if k.startswith("selector.")}

    initial = {f"t5.{k}": v for k, v in safetensors.torch.load_file(str(tiny_models[0] / "model.safetensors")).items()}
    t5_1, selector_1 = t5_weights(1)
    t5_2, selector_2 = t5_weights(2)
    t5_3, _ = t5_weights(3)
    for key, value in t5_2.items():
        assert torch.equal(value, initial[key]) and torch.equal(value, t5_1[key]), key  # frozen: untouched
    assert any(not torch.equal(selector_1[k], selector_2[k]) for k in selector_1)  # while the latents train
    assert any(not torch.equal(t5_2[k], t5_3[k]) for k in t5_2)  # unfrozen at step 3
    frozen_flags = [m["frozen_t5"] for m in _metrics(run) if m["kind"] == "train"]
    assert frozen_flags == [True, True, False, False]


@pytest.mark.slow
def test_nonfinite_guard_skips_and_stops(tiny_models, tmp_path, monkeypatch):
    real_forward = LatentReader.forward
    calls = {"n": 0}

    def sometimes_nan(self, batch):
        calls["n"] += 1
        out = real_forward(self, batch)
        if calls["n"] in inject:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(LatentReader, "forward", sometimes_nan)
    inject = {2}  # the second micro-batch: one skipped update, training goes on
    run = train(tiny_config(tiny_models, tmp_path / "a", "train.epochs=1"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["nonfinite_total"] == 1 and summary["steps"] == 4
    assert all(math.isfinite(m["loss"]) for m in _metrics(run))

    calls["n"], inject = 0, set(range(1, 100))
    with pytest.raises(NonFiniteLossError, match="3 consecutive"):
        train(tiny_config(tiny_models, tmp_path / "b", "train.max_nonfinite_steps=3"))


def _cli(*args, env=None):
    return [sys.executable, "-m", "latentqa.cli", *args]


def _config_file(tiny_models, tmp_path, name, *overrides):
    config = tiny_config(tiny_models, tmp_path / name, *overrides)
    path = tmp_path / f"{name}.yaml"
    config.save(path)
    return path, tmp_path / name / "run"


def _final_weights(run, step):
    return safetensors.torch.load_file(str(run / "checkpoints" / f"step-{step:08d}" / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tiny_models, tmp_path):
    """Dropout on (tiny T5 and encoder use 0.1), gradient accumulation and gradient checkpointing on (the default),
    killed with SIGKILL mid-run; the resumed process must start from the checkpoint, inside its epoch."""
    overrides = ("train.epochs=3", "train.grad_accum=2", "train.save_every_steps=1", "train.keep_last=20",
                 "data.train_limit=12")
    ref_config, ref_run = _config_file(tiny_models, tmp_path, "reference", *overrides)
    assert load_config(ref_config).train.gradient_checkpointing
    subprocess.run(_cli("train", "--config", str(ref_config)), check=True, capture_output=True)
    total = json.loads((ref_run / "summary.json").read_text())["steps"]
    assert total == 9  # 3 steps an epoch

    config, run = _config_file(tiny_models, tmp_path, "killed", *overrides)
    process = subprocess.Popen(_cli("train", "--config", str(config)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "step-00000004").exists():  # mid-epoch 2: step 4 of 3 per epoch
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    latest = int(sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))[-1][5:])
    assert latest in (4, 5), "killed too late to test a resume inside an epoch"
    result = subprocess.run(_cli("train", "--config", str(config), "--resume"), check=True, capture_output=True,
                            text=True)
    micro_batches = 2 * (latest - 3)  # into epoch 2, at 2 micro-batches a step
    assert f"step-{latest:08d} at epoch 1, step {latest}, micro-batch {micro_batches}" in result.stderr
    steps_logged = [m["step"] for m in _metrics(run) if m["kind"] == "train"]
    assert steps_logged.count(1) == 1 and steps_logged[-1] == total  # not restarted from step 0

    reference, resumed = _final_weights(ref_run, total), _final_weights(run, total)
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key
    ref_eval = [m for m in _metrics(ref_run) if m["kind"] == "eval"][-1]
    resumed_eval = [m for m in _metrics(run) if m["kind"] == "eval"][-1]
    assert ref_eval["loss"] == resumed_eval["loss"]


def _without_dropout(tiny_models, out: Path) -> tuple[Path, Path]:
    """Copies of the tiny models with every dropout at 0."""
    copies = []
    for folder, keys in zip(tiny_models, (("dropout_rate",), ("dropout", "attention_dropout"))):
        copy = Path(shutil.copytree(folder, out / folder.name))
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**config, **dict.fromkeys(keys, 0.0)}))
        copies.append(copy)
    return tuple(copies)


@pytest.mark.slow
def test_two_processes_match_one_at_equal_global_batch(tiny_models, tmp_path):
    """torchrun --nproc_per_node 2 on CPU (gloo), batch 2 per process, against 1 process with batch 4, without
    dropout (its masks differ per rank). The logged losses still differ slightly, already at step 1 with identical
    weights (0.15%): each rank averages the answer loss over its own label tokens. Seen: at most 1.6%."""
    models = _without_dropout(tiny_models, tmp_path / "models")
    common = ("train.epochs=2", "data.train_limit=16", "train.cpu=true", "train.log_every_steps=1")
    one_config, one_run = _config_file(models, tmp_path, "one", *common, "train.batch_size=4")
    two_config, two_run = _config_file(models, tmp_path, "two", *common, "train.batch_size=2")
    subprocess.run(_cli("train", "--config", str(one_config)), check=True, capture_output=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # `python -m torch.distributed.run` is torchrun, from the interpreter in use (an unactivated venv has no
    # torchrun on PATH)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29533", "-m", "latentqa.cli", "train", "--config", str(two_config)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = _metrics(one_run), _metrics(two_run)
    assert [m["step"] for m in one] == [m["step"] for m in two]  # same number of optimizer steps
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.03), (a, b)


@pytest.mark.slow
def test_same_seed_same_weights_on_a_cold_and_a_warm_model_cache(tmp_path):
    """The embedded tiny models are built into the cache on the first run only; building them must not move the
    random state the reader's new modules (selector, projection, gate) are drawn from."""
    cache = tmp_path / "cache"
    runs = []
    for name in ("cold", "warm"):
        config = load_config(None, [
            "model.t5=tiny", "model.encoder=tiny", "latent.num_latents=4", "latent.selector_heads=4",
            "data.train_limit=4", "data.validation_limit=2", f"data.cache_dir={cache}",
            f"train.output_dir={tmp_path / name}", "train.epochs=1", "train.batch_size=2", "eval.max_new_tokens=2"])
        runs.append(train(config))
        assert (cache / "tiny-models" / "t5" / "config.json").exists()
    cold, warm = (_final_weights(run, 2) for run in runs)
    assert cold.keys() == warm.keys()
    for key in cold:
        assert torch.equal(cold[key], warm[key]), key


@pytest.mark.slow
def test_ctrl_c_mid_accumulation_stops_at_the_step_and_resumes_exactly(tiny_models, tmp_path, monkeypatch):
    """Ctrl-C while micro-batch 4 (the second of optimizer step 2) runs: the step finishes, its checkpoint holds
    the run state of that step, and resuming from it ends bit-identical to an uninterrupted run."""
    overrides = ("train.epochs=1", "train.grad_accum=2", "data.train_limit=12")
    reference = train(tiny_config(tiny_models, tmp_path / "reference", *overrides))
    real_forward, calls = LatentReader.forward, {"n": 0}

    def ctrl_c_at_the_fourth(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return real_forward(self, batch)

    monkeypatch.setattr(LatentReader, "forward", ctrl_c_at_the_fourth)
    # Python's own Ctrl-C handler, whatever this process was started with (a background job ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    config = tiny_config(tiny_models, tmp_path / "stopped", *overrides)
    try:
        with pytest.raises(TrainingInterrupted, match="interrupted at step 2"):
            train(config)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the trainer's handler is gone
    finally:
        signal.signal(signal.SIGINT, previous)
    run = Path(config.train.output_dir)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000002"]
    state = json.loads((run / "checkpoints" / "step-00000002" / "run_state.json").read_text())
    assert (state["epoch"], state["step"], state["batch_in_epoch"]) == (0, 2, 4)
    monkeypatch.undo()
    train(config, resume="latest")
    expected, resumed = _final_weights(reference, 3), _final_weights(run, 3)
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key


@pytest.mark.slow
def test_fp16_overflow_is_absorbed_by_the_grad_scaler(tiny_models, tmp_path, monkeypatch):
    """A real grad scaler (CPU's; Accelerate makes one on CUDA only) and one overflowing micro-batch: the scaler
    skips that update and halves its scale, the run goes on, nothing counts as non-finite. (A scale of 1: at
    the usual 2^16, fp16 backward on CPU overflows by itself in the first steps.)"""
    from latentqa.training import trainer

    made, real_make = [], trainer.make_accelerator

    def with_grad_scaler(config, log_dir=None):
        accelerator = real_make(config, log_dir)
        accelerator.scaler, accelerator.native_amp = torch.amp.GradScaler("cpu", init_scale=1.0), True
        made.append(accelerator)
        return accelerator

    real_forward, calls = LatentReader.forward, {"n": 0}

    def overflow_at_the_second(self, batch):
        calls["n"] += 1
        out = real_forward(self, batch)
        if calls["n"] == 2:
            out.loss = out.loss * 1e34  # finite in float32; its fp16 gradients are not
        return out

    monkeypatch.setattr(trainer, "make_accelerator", with_grad_scaler)
    monkeypatch.setattr(LatentReader, "forward", overflow_at_the_second)
    run = train(tiny_config(tiny_models, tmp_path, "train.mixed_precision=fp16", "train.epochs=1"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["nonfinite_total"] == 0
    assert made[0].scaler.get_scale() == 0.5


def test_a_best_metric_that_cannot_be_measured_is_refused_up_front(tiny_models, tmp_path):
    with pytest.raises(ConfigError, match="baseline reader predicts no supporting facts"):
        train(tiny_config(tiny_models, tmp_path, "train.best_metric=sp_f1", kind="baseline"))
    unlabelled = tmp_path / "unlabelled.json"
    records = json.loads(SAMPLE_PATH.read_text())[:2]
    unlabelled.write_text(json.dumps([{k: v for k, v in r.items() if k not in ("answer", "supporting_facts")}
                                      for r in records]))
    with pytest.raises(ConfigError, match=f"train.best_metric=em needs answers.*first: {records[0]['_id']}"):
        train(tiny_config(tiny_models, tmp_path, "train.best_metric=em", f"data.validation={unlabelled}"))


@pytest.mark.slow
def test_init_from_starts_from_the_folder_weights(trained_latent_run, tiny_models, tmp_path):
    best = trained_latent_run / "best"
    # the settings it refuses: test_build.py; with zero learning rates one step leaves its weights as they were
    run = train(tiny_config(tiny_models, tmp_path / "b", f"model.init_from={best}", "latent.num_latents=4",
                            "model.t5=google/flan-t5-base", "model.encoder=distilbert-base-uncased",
                            "train.max_steps=1", "train.lr_latent=0", "train.lr_t5=0", "train.lr_encoder=0"))
    assert json.loads((run / "summary.json").read_text())["steps"] == 1
    start = safetensors.torch.load_file(str(best / "model.safetensors"))
    after = _final_weights(run, 1)
    common = start.keys() & after.keys()  # the checkpoint keeps one name of T5's tied embeddings
    assert {"gate", "selector.latents"} <= common and len(common) >= len(after.keys()) - 1
    for key in common:
        assert torch.equal(start[key], after[key]), key


@pytest.mark.slow
def test_max_steps_eval_every_steps_keep_last_and_freeze_t5_epochs(tiny_models, tmp_path):
    run = train(tiny_config(tiny_models, tmp_path, "train.epochs=3", "train.max_steps=6", "train.eval_every_steps=2",
                            "train.save_every_steps=1", "train.keep_last=2", "train.freeze_t5_epochs=1"))
    metrics = _metrics(run)
    assert json.loads((run / "summary.json").read_text())["steps"] == 6
    assert [m["step"] for m in metrics if m["kind"] == "eval"] == [2, 4, 6]  # each step evaluated once
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000005", "step-00000006"]
    frozen = {m["step"]: m["frozen_t5"] for m in metrics if m["kind"] == "train"}
    assert frozen == {1: True, 2: True, 3: True, 4: True, 5: False, 6: False}  # 4 steps an epoch


@pytest.mark.slow
def test_resume_from_a_checkpoint_path_on_the_command_line(tiny_models, tmp_path, capsys):
    from latentqa.cli import main

    config_path, run = _config_file(tiny_models, tmp_path, "run", "train.epochs=1", "train.save_every_steps=1",
                                    "train.keep_last=10")
    assert main(["train", "--config", str(config_path)]) == 0
    first, rows = _final_weights(run, 4), _metrics(run)
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    assert main(["train", "--config", str(config_path), "--resume",
                 str(run / "checkpoints" / "step-00000002")]) == 0
    again = _final_weights(run, 4)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    again_rows = _metrics(run)
    assert [m["step"] for m in again_rows if m["kind"] == "train"] == [1, 2, 3, 4]  # no row twice
    # the rows up to the checkpoint are the first run's (timings included); the second run wrote from step 3
    assert [m for m in again_rows if m["step"] <= 2] == [m for m in rows if m["step"] <= 2]
    capsys.readouterr()
    assert main(["train", "--config", str(config_path), "--resume", str(run / "best")]) == 2
    assert "a reader folder, not a checkpoint" in capsys.readouterr().err
    assert main(["train", "--config", str(config_path)]) == 2  # without --resume: never trained over
    assert "holds a run with checkpoints up to step-00000004; continue it with --resume" in capsys.readouterr().err
    assert _metrics(run) == again_rows and _final_weights(run, 4).keys() == first.keys()  # nothing written
