"""`latentqa bench --modes`: the question-conditioning modes and cached context states, as time relative to `none`.

Contenders share one T5 and one encoder of real size (random weights): the three modes with a trainable encoder
(what `train.freeze_encoder=false` costs), then a frozen encoder without and with a warm state cache (what a
training step and a generation cost once every context has been encoded once).
"""
from __future__ import annotations

import copy

import torch

from ..readers.latent import LatentConfig, LatentReader
from ..readers.state_cache import ContextStateCache
from .timing import contender_tasks, interleaved, spread

# name: (question_conditioning, encoder frozen, states cached)
MODES = {
    "none": ("none", False, False),
    "latents": ("latents", False, False),
    "encoder": ("encoder", False, False),
    "none/frozen": ("none", True, False),
    "none/cached": ("none", True, True),
    "latents/cached": ("latents", True, True),
}


def mode_readers(t5, t5_tokenizer, encoder, encoder_tokenizer, device, gradient_checkpointing: bool) -> dict:
    """One latent reader per contender (sp_scorer 'classifier', as the MiniLM preset trains), sharing T5 and the
    trainable encoder; the frozen ones share a frozen copy of it."""
    frozen_encoder = copy.deepcopy(encoder)
    readers = {}
    for name, (conditioning, frozen, cached) in MODES.items():
        torch.manual_seed(0)
        reader = LatentReader(t5, t5_tokenizer, frozen_encoder if frozen else encoder, encoder_tokenizer,
                              LatentConfig(question_conditioning=conditioning, sp_scorer="classifier")).to(device)
        reader.gate.data.fill_(0.5)
        reader.set_gradient_checkpointing(gradient_checkpointing)
        if frozen:
            reader.freeze_encoder()
        if cached:
            reader.use_state_cache(ContextStateCache(max_mb=4096))
        readers[name] = reader
    return readers


def bench_modes(readers: dict, rows: list[dict], device, *, warmup: int, repeats: int, sync) -> dict:
    """Training-step and 16-token generation seconds of every contender, interleaved; each as a ratio to `none`
    paired per repeat (the warm-up fills the caches)."""
    tasks = {}
    for name, reader in readers.items():
        batch = {k: v.to(device) for k, v in reader.collator()(rows).items()}
        tasks.update(contender_tasks(name, reader, batch))
    seconds = interleaved(tasks, warmup=max(warmup, 1), repeats=repeats, sync=sync)
    figures = {}
    for name in readers:
        figures[name] = {}
        for task in ("train", "generate"):
            own, reference = seconds[f"{name}/{task}"], seconds[f"none/{task}"]
            figures[name][f"{task}_s"] = spread(own)
            figures[name][f"{task}_vs_none"] = spread([a / b for a, b in zip(own, reference)])
    cached, frozen = seconds["none/cached/train"], seconds["none/frozen/train"]
    figures["cached_train_vs_frozen_encoder"] = spread([a / b for a, b in zip(cached, frozen)])
    figures["seconds_per_repeat"] = seconds
    return figures


def _cell(ratio: dict) -> str:
    return f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})".rjust(17)


def format_modes(figures: dict, length: int) -> list[str]:
    lines = [f"modes at {length} tokens, time relative to 'none' (trainable encoder), median (min-max):",
             f"{'mode':<16} {'train s':>8} {'train/none':>17} {'generate s':>10} {'gen/none':>17}"]
    for name in MODES:
        f = figures[name]
        lines.append(f"{name:<16} {f['train_s']['median']:>8.3f} {_cell(f['train_vs_none'])} "
                     f"{f['generate_s']['median']:>10.3f} {_cell(f['generate_vs_none'])}")
    c = figures["cached_train_vs_frozen_encoder"]
    lines.append(f"a cached step / a step running the frozen encoder: {c['median']:.2f} ({c['min']:.2f}-{c['max']:.2f})")
    return lines
