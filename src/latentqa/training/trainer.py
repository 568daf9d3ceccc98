"""One trainer for both readers, on Accelerate: `latentqa train --config configs/NAME.yaml [section.field=value ...]`,
the same command under `accelerate launch` / `torchrun` for many devices.

Exact resume: data order is a permutation drawn from (seed, epoch), and the dropout RNG is reseeded before every
micro-batch from (seed, epoch, micro-batch, rank), so a run stopped at an optimizer step and resumed from its
checkpoint sees the same batches with the same dropout masks as an uninterrupted run. Ctrl-C therefore stops at
the end of the optimizer step under way (a second Ctrl-C stops at once, without saving).
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from ..atomic import discard, replace_folder, write_text
from ..config import ConfigError, SpRule
from ..data.examples import Example
from ..evaluation.metrics import score
from ..evaluation.predict import predict, validation_loss
from ..evaluation.retrieval import paragraph_recall
from ..evaluation.sp_rule import choose_sp_rule, rule_sp_f1
from ..progress import progress_bar
from ..data.collate import IndexedRows
from ..evaluation.facts import select_facts
from ..readers.loading import READERS
from ..readers.state_cache import ContextStateCache
from .build import build_reader, load_split
from .config import RunConfig
from .checkpoints import (checkpoint_dir, drop_tied_embeddings_note, keep_metrics_until, list_checkpoints, prune,
                          resolve_resume, tidy)
from .errors import CannotSave, NonFiniteLossError
from .interrupt import stop_requests
from .order import EpochSampler, dropout_seed
from .state import RunState

log = logging.getLogger(__name__)
RUN_STATE_FILE = "run_state.json"
ANSWER_METRICS = ("em", "f1", "sp_f1", "joint_f1")  # need labelled validation data
SP_METRICS = ("sp_f1", "joint_f1")  # need a reader that predicts supporting facts
# training questions whose context tokens `latent.state_dims`'s projection is fitted on: about 48,000 tokens, as many
# as an index's first shard of 256 paragraphs gives its own
STATE_FIT_QUESTIONS = 32


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C: the run stopped at an optimizer step, with a checkpoint to resume from."""


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


@dataclass
class LossWindow:
    """Training losses and examples since the last log line."""

    losses: list[torch.Tensor] = field(default_factory=list)
    examples: int = 0
    start: float = field(default_factory=time.perf_counter)


@dataclass
class Run:
    """Everything a training run holds while it runs, besides its config and its run state."""

    config: RunConfig
    out: Path
    accelerator: Accelerator
    model: torch.nn.Module  # the prepared reader
    optimizer: torch.optim.Optimizer
    scheduler: object
    train_loader: DataLoader
    val_loader: DataLoader
    gen_loader: DataLoader
    gen_examples: list[Example]
    total_steps: int
    t5_params: list[torch.nn.Parameter]  # frozen during a warm start
    state: RunState = field(default_factory=RunState)
    window: LossWindow = field(default_factory=LossWindow)
    update_poisoned: bool = False  # a non-finite loss in this accumulation cycle: its update is skipped
    saved_at: int | None = None  # the last step checkpointed (or resumed from)


def train(config: RunConfig, resume: str | None = None) -> Path:
    """Train, evaluating each epoch; returns the run folder (best reader in OUT/best)."""
    check_config(config)
    run = setup(config, resume)
    progress = progress_bar(total=run.total_steps, initial=run.state.step, desc="train", unit="step",
                    disable=not run.accelerator.is_local_main_process)
    try:
        with stop_requests(run.accelerator) as stop_requested:
            state = run.state
            if state.step and (state.batch_in_epoch == 0 or state.step >= run.total_steps):
                finish_epoch(run)  # resumed from a checkpoint saved at an epoch's end, maybe before its evaluation
            while state.epoch < config.train.epochs and state.step < run.total_steps:
                train_epoch(run, progress, stop_requested)
                finish_epoch(run)
    finally:
        progress.close()
        run.accelerator.end_training()
    write_summary(run)
    return run.out


# --- stages -------------------------------------------------------------------------------------------------


def check_config(config: RunConfig) -> None:
    """Combinations that cannot train or cannot pick a best reader, refused before anything loads."""
    cfg, kind = config.train, READERS[config.model.kind][0]
    if kind.parts == ("t5",) and (cfg.freeze_t5_steps or cfg.freeze_t5_epochs):
        raise ConfigError(f"train.freeze_t5_*: the {kind.kind} reader is all T5; freezing it would train nothing")
    if "encoder" not in kind.parts and cfg.freeze_encoder:
        raise ConfigError(f"train.freeze_encoder: the {kind.kind} reader has no context encoder")
    if getattr(config.reader, "state_dims", 0) and not cfg.freeze_encoder:
        raise ConfigError("latent.state_dims rounds the context states to int8, so no gradient reaches the encoder "
                          "through them: set train.freeze_encoder=true")
    if not kind.predicts_facts and cfg.best_metric in SP_METRICS:
        raise ConfigError(f"train.best_metric={cfg.best_metric}: the {kind.kind} reader predicts no supporting "
                          "facts; use loss, em or f1")


def setup(config: RunConfig, resume: str | None) -> Run:
    """Accelerator, reader, data, optimizer and schedule, prepared; the run state restored when resuming."""
    cfg = config.train
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(config, out)
    drop_tied_embeddings_note()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        tidy(out)
    accelerator.wait_for_everyone()
    path = resolve_resume(out, resume)  # before anything is written or built
    if accelerator.is_main_process:
        config.save(out / "config.yaml")
        if path is None:  # rows of a start that a kill cut short before its first checkpoint
            (out / "metrics.jsonl").unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)
    reader = build_reader(config)
    reader.set_gradient_checkpointing(cfg.gradient_checkpointing)
    if cfg.freeze_encoder:
        reader.freeze_encoder()

    _, train_features = load_split(config.data, reader, "train", accelerator)
    val_examples, val_features = load_split(config.data, reader, "validation", accelerator)
    gen_count = min(config.eval.limit or len(val_examples), len(val_examples))
    unlabelled = [ex.id for ex in val_examples[:gen_count] if ex.answer is None]
    if cfg.best_metric in ANSWER_METRICS and unlabelled:
        raise ConfigError(f"train.best_metric={cfg.best_metric} needs answers, but data.validation "
                          f"{config.data.validation} has unlabelled examples (first: {unlabelled[0]}); use loss")
    if cfg.freeze_encoder:
        maybe_cache_states(reader, cfg, [*train_features["context_ids"], *val_features["context_ids"]])
    collate = reader.collator()
    fit_heads(reader, train_features, collate, accelerator, config.data.train)
    train_loader = DataLoader(IndexedRows(train_features), batch_size=cfg.batch_size,
                              sampler=EpochSampler(len(train_features), cfg.seed), collate_fn=collate)
    val_loader = DataLoader(IndexedRows(val_features), batch_size=config.eval.batch_size, collate_fn=collate)
    gen_loader = DataLoader(IndexedRows(val_features.select(range(gen_count))), batch_size=config.eval.batch_size,
                            collate_fn=collate)

    rates = {"latent": cfg.lr_latent, "t5": cfg.lr_t5, "encoder": cfg.lr_encoder, "answer": cfg.lr_answer}
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

    run = Run(config, out, accelerator, model, optimizer, scheduler, train_loader, val_loader, gen_loader,
              val_examples[:gen_count], total_steps, reader.parameter_groups()["t5"])
    if path is not None:
        accelerator.load_state(str(path))
        run.state.load_state_dict(json.loads((path / RUN_STATE_FILE).read_text()))
        run.saved_at = run.state.step
        if run.state.batch_in_epoch >= len(run.train_loader):  # saved at an epoch's last step by an earlier version
            run.state.epoch, run.state.batch_in_epoch = run.state.epoch + 1, 0
        if accelerator.is_main_process:
            keep_metrics_until(out / "metrics.jsonl", run.state.step, run.state.evaluated_step)
        log.info("resumed from %s at epoch %d, step %d, micro-batch %d", path, run.state.epoch, run.state.step,
                 run.state.batch_in_epoch)
    accelerator.init_trackers("tensorboard")
    return run


def finish_epoch(run: Run) -> None:
    """At each epoch end, and where max_steps stopped the run: evaluate and save (unless this step was just)."""
    if run.state.evaluated_step != run.state.step:
        evaluate(run)
    if run.saved_at != run.state.step:
        save_checkpoint(run)


def train_epoch(run: Run, progress, stop_requested) -> None:
    """The rest of the current epoch (all of it unless resuming inside it), or up to the last step."""
    state, accelerator = run.state, run.accelerator
    batches = accelerator.skip_first_batches(run.train_loader, state.batch_in_epoch) \
        if state.batch_in_epoch else run.train_loader
    # On the loader we iterate: Accelerate passes its own epoch counter to the sampler on every __iter__, and the
    # loader made by skip_first_batches starts that counter at 0.
    batches.set_epoch(state.epoch)
    run.model.train()
    for batch in batches:
        micro_step(run, batch)
        if not accelerator.sync_gradients:
            continue
        state.step += 1
        if state.batch_in_epoch >= len(run.train_loader):  # the epoch's last step: what it saves is past the epoch
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        progress.update(1)
        maybe_log(run, progress)
        cfg = run.config.train
        if cfg.eval_every_steps and state.step % cfg.eval_every_steps == 0:
            evaluate(run)
        if cfg.save_every_steps and state.step % cfg.save_every_steps == 0:
            save_checkpoint(run)
        if stop_requested():
            stop(run)
        if state.step >= run.total_steps:
            break


def micro_step(run: Run, batch) -> None:
    """Forward and backward of one micro-batch; at the end of an accumulation cycle, the update."""
    state, accelerator, cfg = run.state, run.accelerator, run.config.train
    set_t5_frozen(run, state.step < cfg.freeze_t5_steps or state.epoch < cfg.freeze_t5_epochs)
    torch.manual_seed(dropout_seed(cfg.seed, state.epoch, state.batch_in_epoch, accelerator.process_index))
    with accelerator.accumulate(run.model):
        with accelerator.autocast():
            loss = run.model(batch).loss
        if bool(accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all()):
            accelerator.backward(loss)
            run.window.losses.append(loss.detach().float())
        else:
            note_nonfinite(state, cfg.max_nonfinite_steps, "loss")
            run.update_poisoned = True
        if accelerator.sync_gradients:
            update(run)
        run.optimizer.zero_grad(set_to_none=True)
    run.window.examples += batch["index"].shape[0] * accelerator.num_processes
    state.batch_in_epoch += 1


def update(run: Run) -> None:
    """The optimizer step, unless this cycle saw a non-finite loss or (without a grad scaler) a non-finite
    gradient. Under fp16 an overflowing gradient is the scaler's to absorb: it skips the step and lowers its scale."""
    state, accelerator, cfg = run.state, run.accelerator, run.config.train
    poisoned, run.update_poisoned = run.update_poisoned, False
    if poisoned:
        return
    norm = accelerator.clip_grad_norm_(run.model.parameters(), cfg.max_grad_norm or math.inf)
    if accelerator.scaler is None and not math.isfinite(float(norm)):
        note_nonfinite(state, cfg.max_nonfinite_steps, "gradient")
        return
    run.optimizer.step()
    if accelerator.optimizer_step_was_skipped:
        log.debug("fp16 gradient overflow at step %d: the scaler skipped the update", state.step)
        return
    run.scheduler.step()
    state.nonfinite_streak = 0


def set_t5_frozen(run: Run, frozen: bool) -> None:
    """Begin or end the frozen-T5 warm start (a no-op while it does not change)."""
    if run.t5_params[0].requires_grad == frozen:
        for p in run.t5_params:
            p.requires_grad_(not frozen)


def maybe_log(run: Run, progress) -> None:
    state, window, cfg = run.state, run.window, run.config.train
    if state.step % cfg.log_every_steps or not window.losses:
        return
    rate = window.examples / (time.perf_counter() - window.start)
    rates = {f"lr_{g['name']}": g["lr"] for g in run.optimizer.param_groups}
    entry = {"kind": "train", "epoch": state.epoch, "step": state.step,
             "loss": run.accelerator.gather(torch.stack(window.losses)).mean().item(), "examples_per_s": rate,
             "frozen_t5": not run.t5_params[0].requires_grad, "nonfinite_total": state.nonfinite_total, **rates}
    record(run, entry)
    progress.set_postfix(loss=f"{entry['loss']:.3f}", lr=f"{entry.get('lr_latent', entry['lr_t5']):.1e}",
                         ex_s=f"{rate:.1f}", refresh=False)
    run.window = LossWindow()


def evaluate(run: Run) -> dict:
    """Validation loss, then generated answers scored; the best reader so far goes to OUT/best."""
    state, accelerator, cfg = run.state, run.accelerator, run.config.train
    metrics = {"kind": "eval", "epoch": state.epoch, "step": state.step,
               **validation_loss(run.model, run.val_loader, accelerator)}
    predictions = predict(run.model, run.gen_loader, run.gen_examples, accelerator, run.config.eval, run.config.sp,
                          desc="evaluate")
    if all(ex.answer is not None for ex in run.gen_examples):
        if predictions.sp is not None:
            metrics["paragraph_recall"] = paragraph_recall(run.gen_examples, predictions.paragraph_ranking)
            maybe_choose_sp_rule(run, predictions, metrics)
        scores = score(run.gen_examples, predictions.answers, predictions.sp)
        metrics.update({k: v for k, v in scores.items() if v is not None})
    value = metrics.get(cfg.best_metric, math.nan)
    if state.improves(value, higher_is_better=cfg.best_metric != "loss"):
        state.best_value, state.best_step = value, state.step
        weights = accelerator.get_state_dict(run.model)  # every process takes part: FSDP gathers the shards
        if accelerator.is_main_process:
            tmp = run.out / "best.tmp"
            with saving(run, "the best reader", tmp):
                accelerator.unwrap_model(run.model).save_pretrained(tmp, state_dict=weights)
                replace_folder(tmp, run.out / "best")
        metrics["best"] = True
    record(run, metrics)
    state.evaluated_step = state.step
    accelerator.wait_for_everyone()
    return metrics


def maybe_cache_states(reader, cfg, contexts: list[list[int]]) -> None:
    """Cache the frozen encoder's context states where they are question-free; say so when the cap is too small,
    and refuse a disk folder that cannot hold them."""
    if reader.cache_refusal() is not None or cfg.state_cache_mb == 0:
        log.info("context states are not cached: %s", reader.cache_refusal() or "train.state_cache_mb=0")
        return
    # fp16 states of every context token (window [CLS]/[SEP] aside): what one epoch and one evaluation touch
    needed = sum(map(len, contexts)) * reader.encoder.config.hidden_size * 2 / 2**20
    if cfg.state_cache_dir:
        folder = Path(cfg.state_cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free / 2**20
        if needed > free:
            raise ConfigError(f"train.state_cache_dir {folder}: the context states need about {needed:.0f} MB, "
                              f"{free:.0f} MB are free there; free space, point it elsewhere or set it to null")
    if needed > cfg.state_cache_mb:
        log.warning("context states of the training and validation data need about %.0f MB, but "
                    "train.state_cache_mb=%.0f: the rest is recomputed every epoch (raise it%s)", needed,
                    cfg.state_cache_mb, "" if cfg.state_cache_dir else ", or set train.state_cache_dir")
    else:
        log.info("caching context states (about %.0f MB)", needed)
    reader.use_state_cache(ContextStateCache(max_mb=cfg.state_cache_mb, directory=cfg.state_cache_dir,
                                             states=cfg.state_cache_states))


def fit_heads(reader, features, collate, accelerator, source: str) -> None:
    """Fit what is fitted, not trained (the stored states' projection, the paragraph-pair ranker), on the training
    data before the first step (an `init_from` reader keeps its fit; a resumed run refits the same and then loads its
    checkpoint's); every process fits the same data."""
    stored = getattr(reader, "stored_states", None)
    if stored is not None and not stored.fitted:
        first = features.select(range(min(STATE_FIT_QUESTIONS, len(features))))
        batches = DataLoader(IndexedRows(first), batch_size=8, collate_fn=collate)
        figures = reader.fit_stored_states(progress_bar(batches, desc=f"fit {stored.format.name}", unit="batch",
                                                        disable=not accelerator.is_local_main_process))
        log.info("states %s fitted on the first %d questions of data.train: %s", stored.format.name, len(first),
                 ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))
    for head in [head for head in reader.heads if head.needs_fit]:
        batches = DataLoader(IndexedRows(features), batch_size=256, collate_fn=collate)
        try:
            figures = head.fit(progress_bar(batches, desc=f"fit {head.name}", unit="batch",
                                            disable=not accelerator.is_local_main_process))
        except ValueError as err:
            raise ConfigError(f"{head.name}: data.train {source}: {err}") from None
        log.info("%s fitted on data.train: %s", head.name, ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))


def maybe_choose_sp_rule(run: Run, predictions, metrics: dict) -> None:
    """Unless the config fixes the supporting-fact rule, choose it on this validation data: the reader keeps it
    (it is saved with the best reader) and the predictions' facts follow it."""
    if run.config.sp.given:
        return
    rule, _ = choose_sp_rule(run.gen_examples, predictions.sentence_scores, predictions.paragraph_scores)
    metrics["sp_f1_top2"] = rule_sp_f1(run.gen_examples, predictions.sentence_scores, SpRule(top_k=2))
    metrics["sp_rule"] = rule.to_dict()
    run.accelerator.unwrap_model(run.model).sp_rule = rule
    for ex in run.gen_examples:
        predictions.sp[ex.id] = select_facts(ex, predictions.sentence_scores[ex.id], rule,
                                             predictions.paragraph_scores.get(ex.id))


def record(run: Run, metrics: dict) -> None:
    if run.accelerator.is_main_process:
        with saving(run, "a row of metrics.jsonl"), open(run.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
    run.accelerator.log({f"{metrics['kind']}/{k}": v for k, v in metrics.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=run.state.step)


def save_checkpoint(run: Run) -> Path:
    """Model, optimizer, scheduler, RNG and run state at the current optimizer step, written atomically."""
    accelerator, final = run.accelerator, checkpoint_dir(run.out, run.state.step)
    tmp = final.with_name(final.name + ".tmp")  # one name for every process: each writes its part into it
    with saving(run, f"checkpoint {final.name}", tmp):
        accelerator.save_state(str(tmp), safe_serialization=True)
        if accelerator.is_main_process:
            (tmp / RUN_STATE_FILE).write_text(json.dumps(run.state.state_dict()))
            replace_folder(tmp, final)
    if accelerator.is_main_process:
        prune(run.out, run.config.train.keep_last)
    run.saved_at = run.state.step
    accelerator.wait_for_everyone()
    return final


@contextmanager
def saving(run: Run, what: str, tmp: Path | None = None):
    """Writing `what` (through `tmp`, if it is published by renaming): a failed write (full disk, permissions)
    removes `tmp` and stops the run in one line; what was published before stays as it was (a metrics row cut short
    is dropped on resume)."""
    try:
        yield
    except OSError as err:
        if tmp is not None:
            discard(tmp)
        last = list_checkpoints(run.out)
        where = f"the last checkpoint, {last[-1].name}, is whole" if last else "no checkpoint was saved yet"
        raise CannotSave(f"step {run.state.step}: cannot write {what} under {run.out} ({err}); {where}: free "
                         "space, then continue with --resume") from None


def stop(run: Run) -> None:
    """After Ctrl-C, at an optimizer step: keep a checkpoint of this step (the one saved just now, if any)."""
    path = checkpoint_dir(run.out, run.state.step) if run.saved_at == run.state.step else save_checkpoint(run)
    log.warning("interrupted at step %d: checkpoint %s (continue with --resume)", run.state.step, path)
    raise TrainingInterrupted(f"interrupted at step {run.state.step}; checkpoint {path}")


def write_summary(run: Run) -> None:
    if not run.accelerator.is_main_process:
        return
    state, cfg = run.state, run.config.train
    summary = {"steps": state.step, "epochs": state.epoch, "best_metric": cfg.best_metric,
               "best_value": state.best_value, "best_step": state.best_step, "nonfinite_total": state.nonfinite_total}
    with saving(run, "summary.json"):
        write_text(run.out / "summary.json", json.dumps(summary, indent=2))
    log.info("done: %s", summary)


def note_nonfinite(state: RunState, limit: int, what: str) -> None:
    state.nonfinite_streak += 1
    state.nonfinite_total += 1
    log.warning("non-finite %s at step %d: update skipped (%d in a row, %d in all)",
                what, state.step, state.nonfinite_streak, state.nonfinite_total)
    if state.nonfinite_streak >= limit:
        raise NonFiniteLossError(
            f"{state.nonfinite_streak} consecutive non-finite {what}es at step {state.step}: stopping. "
            "Lower the learning rates, use bf16 instead of fp16, or check the data.")
