"""One trainer for both readers, on Accelerate: `latentqa train --config configs/NAME.yaml [section.field=value ...]`,
the same command under `accelerate launch` / `torchrun` for many devices.

Exact resume: data order is a permutation drawn from (seed, epoch), and the dropout RNG is reseeded before every
micro-batch from (seed, epoch, micro-batch, rank), so a run stopped anywhere and resumed from its last checkpoint
sees the same batches with the same dropout masks as an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..config import ConfigError, RunConfig
from ..evaluation.metrics import score
from ..evaluation.predict import predict, validation_loss
from ..readers.collate import IndexedRows
from .build import build_reader, load_split
from .checkpoints import checkpoint_dir, prune, publish, resolve_resume
from .state import RunState

log = logging.getLogger(__name__)
RUN_STATE_FILE = "run_state.json"


class NonFiniteLossError(RuntimeError):
    pass


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


def make_accelerator(config: RunConfig, log_dir: Path | None = None) -> Accelerator:
    # Several runs in one process (the demo, tests) each get a clean Accelerate state.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(
        mixed_precision=config.train.mixed_precision, cpu=config.train.cpu,
        gradient_accumulation_steps=config.train.grad_accum,
        log_with="tensorboard" if log_dir else None, project_dir=str(log_dir) if log_dir else None,
        # T5 is frozen in a warm start: its parameters then get no gradient.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def train(config: RunConfig, resume: str | None = None) -> Path:
    """Train, evaluating each epoch; returns the run folder (best reader in OUT/best)."""
    cfg = config.train
    out = Path(cfg.output_dir)
    if config.model.kind == "baseline" and (cfg.freeze_t5_steps or cfg.freeze_t5_epochs):
        raise ConfigError("train.freeze_t5_*: the baseline reader is all T5; freezing it would train nothing")
    accelerator = make_accelerator(config, out)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.yaml")
    set_seed(cfg.seed)
    reader = build_reader(config.model, config.data.cache_dir)
    reader.set_gradient_checkpointing(cfg.gradient_checkpointing)

    # --- data ---
    train_examples, train_features = load_split(config.data, reader, "train", accelerator)
    val_examples, val_features = load_split(config.data, reader, "validation", accelerator)
    gen_count = min(config.eval.limit or len(val_examples), len(val_examples))
    collate = reader.collator()
    sampler = EpochSampler(len(train_features), cfg.seed)
    train_loader = DataLoader(IndexedRows(train_features), batch_size=cfg.batch_size, sampler=sampler,
                              collate_fn=collate)
    val_loader = DataLoader(IndexedRows(val_features), batch_size=config.eval.batch_size, collate_fn=collate)
    gen_loader = DataLoader(IndexedRows(val_features.select(range(gen_count))), batch_size=config.eval.batch_size,
                            collate_fn=collate)

    # --- optimisation ---
    rates = {"latent": cfg.lr_latent, "t5": cfg.lr_t5, "encoder": cfg.lr_encoder}
    groups = [{"params": params, "lr": rates[name], "name": name} for name, params in reader.parameter_groups().items()]
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    model, optimizer, train_loader, val_loader, gen_loader = accelerator.prepare(
        reader, optimizer, train_loader, val_loader, gen_loader)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    total_steps = min(cfg.max_steps or math.inf, cfg.epochs * steps_per_epoch)
    # A prepared scheduler steps once per process for every optimizer step.
    scheduler = accelerator.prepare(get_linear_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * total_steps) * accelerator.num_processes,
        total_steps * accelerator.num_processes))

    state = RunState()
    if resume:
        path = resolve_resume(out, resume)
        accelerator.load_state(str(path))
        state.load_state_dict(json.loads((path / RUN_STATE_FILE).read_text()))
        log.info("resumed from %s at epoch %d, step %d", path, state.epoch, state.step)
    accelerator.init_trackers("tensorboard")
    t5_params = reader.parameter_groups()["t5"]

    def save_checkpoint() -> None:
        final = checkpoint_dir(out, state.step)
        tmp = final.with_name(final.name + ".tmp")
        accelerator.save_state(str(tmp), safe_serialization=True)
        if accelerator.is_main_process:
            (tmp / RUN_STATE_FILE).write_text(json.dumps(state.state_dict()))
            publish(tmp, final)
            prune(out, cfg.keep_last)
        accelerator.wait_for_everyone()

    def evaluate() -> dict:
        metrics = {"kind": "eval", "epoch": state.epoch, "step": state.step, **validation_loss(model, val_loader, accelerator)}
        predictions = predict(model, gen_loader, val_examples[:gen_count], accelerator, config.eval, desc="evaluate")
        if all(ex.answer is not None for ex in val_examples[:gen_count]):
            metrics.update({k: v for k, v in score(val_examples[:gen_count], predictions.answers, predictions.sp).items()
                            if v is not None})
        value = metrics.get(cfg.best_metric, math.nan)
        if state.improves(value, higher_is_better=cfg.best_metric != "loss"):
            state.best_value, state.best_step = value, state.step
            if accelerator.is_main_process:
                tmp = out / "best.tmp"
                accelerator.unwrap_model(model).save_pretrained(tmp)
                publish(tmp, out / "best")
            metrics["best"] = True
        record(metrics)
        accelerator.wait_for_everyone()
        return metrics

    def record(metrics: dict) -> None:
        if accelerator.is_main_process:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
        accelerator.log({f"{metrics['kind']}/{k}": v for k, v in metrics.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=state.step)

    progress = tqdm(total=total_steps, initial=state.step, desc="train", unit="step",
                    disable=not accelerator.is_local_main_process)
    window_loss, window_examples, window_start = [], 0, time.perf_counter()
    model.train()
    try:
        while state.epoch < cfg.epochs and state.step < total_steps:
            batches = accelerator.skip_first_batches(train_loader, state.batch_in_epoch) \
                if state.batch_in_epoch else train_loader
            # On the loader we iterate: Accelerate passes its own epoch counter to the sampler on every __iter__,
            # and the loader made by skip_first_batches starts that counter at 0.
            batches.set_epoch(state.epoch)
            for batch in batches:
                frozen = state.step < cfg.freeze_t5_steps or state.epoch < cfg.freeze_t5_epochs
                if t5_params[0].requires_grad == frozen:  # the warm start begins or ends
                    for p in t5_params:
                        p.requires_grad_(not frozen)
                torch.manual_seed(dropout_seed(cfg.seed, state.epoch, state.batch_in_epoch, accelerator.process_index))
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        loss = model(batch).loss
                    if not bool(accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all()):
                        skip_nonfinite(state, cfg.max_nonfinite_steps, "loss")
                        optimizer.zero_grad(set_to_none=True)
                    else:
                        accelerator.backward(loss)
                        if accelerator.sync_gradients:
                            norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or math.inf)
                            if not math.isfinite(float(norm)):
                                skip_nonfinite(state, cfg.max_nonfinite_steps, "gradient")
                            else:
                                state.nonfinite_streak = 0
                                optimizer.step()
                                scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                        window_loss.append(loss.detach().float())
                window_examples += batch["index"].shape[0] * accelerator.num_processes
                state.batch_in_epoch += 1
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                progress.update(1)
                if state.step % cfg.log_every_steps == 0 and window_loss:
                    rate = window_examples / (time.perf_counter() - window_start)
                    entry = {"kind": "train", "epoch": state.epoch, "step": state.step,
                             "loss": accelerator.gather(torch.stack(window_loss)).mean().item(),
                             "examples_per_s": rate, "frozen_t5": frozen, "nonfinite_total": state.nonfinite_total,
                             **{f"lr_{g['name']}": g["lr"] for g in optimizer.param_groups}}
                    record(entry)
                    progress.set_postfix(loss=f"{entry['loss']:.3f}", lr=f"{entry.get('lr_latent', entry['lr_t5']):.1e}",
                                         ex_s=f"{rate:.1f}")
                    window_loss, window_examples, window_start = [], 0, time.perf_counter()
                if cfg.eval_every_steps and state.step % cfg.eval_every_steps == 0:
                    evaluate()
                if cfg.save_every_steps and state.step % cfg.save_every_steps == 0:
                    save_checkpoint()
                if state.step >= total_steps:
                    break
            if state.batch_in_epoch >= len(train_loader):  # the epoch ran to its end
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            evaluate()  # at each epoch end, and where max_steps stopped the run
            save_checkpoint()
    except KeyboardInterrupt:
        log.warning("interrupted: saving a checkpoint at step %d (resume with --resume latest)", state.step)
        save_checkpoint()
        raise
    finally:
        progress.close()
        accelerator.end_training()
    if accelerator.is_main_process:
        summary = {"steps": state.step, "epochs": state.epoch, "best_metric": cfg.best_metric,
                   "best_value": state.best_value, "best_step": state.best_step,
                   "nonfinite_total": state.nonfinite_total}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        log.info("done: %s", summary)
    return out


def skip_nonfinite(state: RunState, limit: int, what: str) -> None:
    state.nonfinite_streak += 1
    state.nonfinite_total += 1
    log.warning("non-finite %s at step %d: update skipped (%d in a row, %d in all)",
                what, state.step, state.nonfinite_streak, state.nonfinite_total)
    if state.nonfinite_streak >= limit:
        raise NonFiniteLossError(
            f"{state.nonfinite_streak} consecutive non-finite {what}es at step {state.step}: stopping. "
            "Lower the learning rates, use bf16 instead of fp16, or check the data.")
