"""`latentqa bench --latents 4 8 16 32`: what the number of latents read costs in generation.

One nested latent reader of real size (random weights; `latent.nested_latents` the counts given) with a frozen
encoder and a warm state cache, so that a generation is what serving a known context costs: T5's encoder over the
question, the selector, and 16 tokens from T5's decoder over [question ; first k latents]. Each count is timed in
the same interleaved repeats; the ratio is each count's examples per second over the largest count's, paired per
repeat.
"""
from __future__ import annotations

import copy

import torch

from ..readers.latent import LatentConfig, LatentReader
from ..readers.state_cache import ContextStateCache
from .timing import interleaved, spread


def latents_reader(t5, t5_tokenizer, encoder, encoder_tokenizer, counts: tuple[int, ...], device) -> LatentReader:
    torch.manual_seed(0)
    reader = LatentReader(t5, t5_tokenizer, copy.deepcopy(encoder), encoder_tokenizer,
                          LatentConfig(num_latents=counts[-1], nested_latents=counts)).to(device)
    reader.gate.data.fill_(0.5)  # an open gate: the latents are read
    reader.freeze_encoder()
    reader.use_state_cache(ContextStateCache(max_mb=4096))
    return reader.eval()


def bench_latents(reader: LatentReader, rows: list[dict], device, *, warmup: int, repeats: int, sync) -> dict:
    """16-token generation seconds at each count the reader was trained for; the warm-up fills the state cache."""
    batch = {k: v.to(device) for k, v in reader.collator()(rows).items()}
    counts = reader.latent_counts

    def generate(k):
        with torch.no_grad():
            reader.generate(batch, latents=k, max_new_tokens=16, min_new_tokens=16, do_sample=False)

    seconds = interleaved({str(k): (lambda k=k: generate(k)) for k in counts}, warmup=max(warmup, 1),
                          repeats=repeats, sync=sync)
    largest = seconds[str(counts[-1])]
    return {"counts": list(counts), "seconds_per_repeat": seconds,
            **{str(k): {"generate_s": spread(seconds[str(k)]),
                        "speedup_vs_largest": spread([b / a for a, b in zip(seconds[str(k)], largest)])}
               for k in counts}}


def format_latents(figures: dict, length: int) -> list[str]:
    largest = figures["counts"][-1]
    lines = [f"latents read at {length} tokens (frozen encoder, cached states; 16 tokens generated), median (min-max):",
             f"{'k':>4} {'generate s':>10} {f'speed vs k={largest}':>17}"]
    for k in figures["counts"]:
        f = figures[str(k)]
        s = f["speedup_vs_largest"]
        speed = f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"
        lines.append(f"{k:>4} {f['generate_s']['median']:>10.3f} {speed:>17}")
    return lines
