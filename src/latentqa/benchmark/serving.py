"""`latentqa bench-serve`: a bounded load generator against `latentqa serve`, on loopback, as ratios in one run.

The reader is the real-size latent reader (flan-t5-base and distilbert-base-uncased shapes, random weights; the
context tokenizer is MiniLM's, which has distilbert-base-uncased's vocabulary, where it is installed) or a reader
folder given. Queries are the shipped real HotpotQA sample's questions with their whole contexts. Phases, each a
fixed number of requests sent by a fixed number of client threads, within a time limit:

  cache off, concurrency 1, 8, 32   what dynamic batching buys (every request encodes its context)
  cache on, concurrency 8: cold     every context seen for the first time
  cache on, concurrency 8: warm     the same contexts again (every window's states cached)
  cache on, concurrency 1: warm     and again, one at a time: what batching buys once the encoder work is gone
  cache on, concurrency 8: reordered  the same paragraphs in reverse order: the hits the window packing allows

Every reply is checked: status 200, its own id, scores over its own sentences, and the same answer for the same
query in every phase of one server. A request that is lost, late past the limit or answered with another's answer is counted.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..data.examples import Example
from ..data.sources import load_examples
from ..progress import progress_bar
from ..resources import SAMPLE_PATH
from ..serving.batching import Batching
from ..serving.client import LocalServer, http_json


def bench_reader(out: Path, quick: bool) -> Path:
    """The real-size latent reader with random weights (`quick`: tiny shapes), saved as a reader folder."""
    import torch
    from transformers import AutoModel, AutoTokenizer, T5ForConditionalGeneration

    from ..assets import build_tiny_models, pretrained_encoder_path
    from ..readers.latent import LatentConfig, LatentReader
    from .run import real_size_models

    examples, _ = load_examples(str(SAMPLE_PATH))
    t5_dir, tiny_encoder_dir = build_tiny_models(out / "assets", examples)
    t5_config, encoder_config = real_size_models(quick)
    try:  # MiniLM's WordPiece vocabulary is distilbert-base-uncased's: real-size windows of real text
        encoder_tokenizer = AutoTokenizer.from_pretrained(pretrained_encoder_path())
    except FileNotFoundError:  # the [pretrained] extra is not installed: the embedded tokenizer (smaller vocab)
        encoder_tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    torch.manual_seed(0)
    reader = LatentReader(T5ForConditionalGeneration(t5_config), AutoTokenizer.from_pretrained(t5_dir),
                          AutoModel.from_config(encoder_config), encoder_tokenizer, LatentConfig(gate_init=1.0))
    return reader.save_pretrained(out / "reader")


def query(example: Example) -> dict:
    return {"id": example.id, "question": example.question,
            "paragraphs": [[p.title, list(p.sentences)] for p in example.paragraphs]}


def load_phase(port: int, examples: list[Example], *, requests: int, concurrency: int, deadline: float,
               answers: dict[str, str] | None, desc: str) -> dict:
    """Send `requests` queries (the examples in turn) from `concurrency` threads; figures and checks (`answers`:
    the first answer seen for each id, which every later one must equal; None: not checked)."""
    before = http_json(port, "GET", "/v1/info")[1]["state_cache"]

    def one(i: int):
        ex = examples[i % len(examples)]
        if time.monotonic() > deadline:
            return ex, None, None
        start = time.perf_counter()
        try:
            status, reply = http_json(port, "POST", "/v1/answer", query(ex), timeout=max(deadline - time.monotonic(), 1))
        except OSError as err:
            status, reply = None, {"error": str(err)}
        return ex, (status, reply), time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(progress_bar(pool.map(one, range(requests)), total=requests, desc=desc, unit="req"))
    wall = time.perf_counter() - start
    latencies, wrong, lost, skipped, batch_sizes = [], 0, 0, 0, []
    for ex, outcome, seconds in results:
        if outcome is None:
            skipped += 1
            continue
        status, reply = outcome
        if status != 200:
            lost += 1
            continue
        own = reply["id"] == ex.id and [(s["title"], s["sent_id"]) for s in reply["sentence_scores"]] == \
            ex.sentence_keys() and (answers is None or answers.setdefault(ex.id, reply["answer"]) == reply["answer"])
        wrong += not own
        latencies.append(seconds * 1000)
        batch_sizes.append(reply["batch_size"])
    answered = len(latencies)
    after = http_json(port, "GET", "/v1/info")[1]["state_cache"]
    cache = {f"cache_{k}": after[k] - before[k] for k in ("hits", "misses")} if after["enabled"] else {}
    return {**cache, "requests": requests, "answered": answered, "lost": lost, "wrong": wrong, "past_time_limit": skipped,
            "concurrency": concurrency, "seconds": round(wall, 2),
            "throughput_rps": round(answered / wall, 3) if answered else 0.0,
            "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "p95_ms": round(quantile(latencies, 0.95), 1) if latencies else None,
            "mean_batch_size": round(statistics.mean(batch_sizes), 2) if batch_sizes else None}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_serve_bench(*, model: str | None, out_dir: Path, concurrency=(1, 8, 32), requests: int = 32,
                    batching: Batching = Batching(), max_new_tokens: int = 16,
                    cache_mb: float = 1024, time_limit_s: float = 1200, quick: bool = False,
                    window_packing: str | None = None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    examples, _ = load_examples(str(SAMPLE_PATH))
    deadline = time.monotonic() + time_limit_s
    with tempfile.TemporaryDirectory() as tmp:
        reader_dir = model or bench_reader(Path(tmp), quick)
        serve_options = [*(f"--{name.replace('_', '-')}={value}" for name, value in dataclasses.asdict(batching).items()),
                         "--max-new-tokens", str(max_new_tokens),
                         *(["--window-packing", window_packing] if window_packing else [])]
        phases, answers_off, answers_on = {}, {}, {}
        with LocalServer(reader_dir, *serve_options, "--cache-mb", "0") as server:
            info = server.request("GET", "/v1/info")[1]
            for c in concurrency:
                phases[f"cache off, c={c}"] = load_phase(
                    server.port, examples, requests=max(requests, c), concurrency=c, deadline=deadline,
                    answers=answers_off, desc=f"cache off, concurrency {c}")
        warm_c = 8 if 8 in concurrency else max(concurrency)
        with LocalServer(reader_dir, *serve_options, "--cache-mb", str(cache_mb)) as server:
            # every example once (cold), then again (warm), then again one at a time: batching with the encoder
            # work gone
            for name, c in (("cold", warm_c), ("warm", warm_c), ("warm", min(concurrency))):
                phases[f"cache {name}, c={c}"] = load_phase(
                    server.port, examples, requests=len(examples), concurrency=c, deadline=deadline,
                    answers=answers_on, desc=f"cache {name}, concurrency {c}")
            # the same paragraphs in the reverse order, as another retriever would rank them: how many windows
            # still hit depends on the packing (greedy windows hold several paragraphs)
            reordered = [dataclasses.replace(ex, paragraphs=ex.paragraphs[::-1]) for ex in examples]
            phases[f"cache warm, reordered, c={warm_c}"] = load_phase(
                server.port, reordered, requests=len(examples), concurrency=warm_c, deadline=deadline, answers=None,
                desc=f"cache warm, paragraphs reordered, concurrency {warm_c}")
            cache = server.request("GET", "/v1/info")[1]["state_cache"]
    results = {"reader": {k: info[k] for k in ("kind", "parameters", "device")}, "quick": quick,
               "window_packing": info["window_packing"],
               "serve_options": {**dataclasses.asdict(batching), "max_new_tokens": max_new_tokens, "cache_mb": cache_mb},
               "phases": phases, "cache": cache, "ratios": ratios(phases, concurrency, warm_c),
               # the cache keeps states in float16: a near-tie in a random model's greedy answer can flip
               "answers_differing_with_cache": sum(answers_on[i] != a for i, a in answers_off.items() if i in answers_on)}
    (out_dir / "bench-serve.json").write_text(json.dumps(results, indent=2))
    return results


def ratios(phases: dict, concurrency, warm_c: int) -> dict:
    def rps(name):
        return phases.get(name, {}).get("throughput_rps") or None

    out = {}
    base = rps(f"cache off, c={min(concurrency)}")
    for c in concurrency:
        if c != min(concurrency) and base and rps(f"cache off, c={c}"):
            out[f"c={c} / c={min(concurrency)}, cache off"] = round(rps(f"cache off, c={c}") / base, 2)
    cold, warm = rps(f"cache cold, c={warm_c}"), rps(f"cache warm, c={warm_c}")
    if cold and warm:
        out[f"warm / cold cache, c={warm_c}"] = round(warm / cold, 2)
    alone = rps(f"cache warm, c={min(concurrency)}")
    if warm and alone and warm_c != min(concurrency):
        out[f"c={warm_c} / c={min(concurrency)}, warm cache"] = round(warm / alone, 2)
    return out


def format_serve_results(results: dict) -> str:
    lines = [f"{'phase':<32} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'batch':>6} {'answered':>9} {'lost':>5} "
             f"{'wrong':>6} {'window hits':>12}"]
    for name, p in results["phases"].items():
        hits = f"{p['cache_hits']}/{p['cache_hits'] + p['cache_misses']}" if "cache_hits" in p else "-"
        lines.append(f"{name:<32} {p['throughput_rps']:>7.2f} {p['p50_ms'] or 0:>8.0f} {p['p95_ms'] or 0:>8.0f} "
                     f"{p['mean_batch_size'] or 0:>6.2f} {p['answered']:>4}/{p['requests']:<4} {p['lost']:>5} "
                     f"{p['wrong']:>6} {hits:>12}")
    lines.append(f"window packing: {results['window_packing']}")
    lines += [f"{name}: {value}×" for name, value in results["ratios"].items()]
    cache = results["cache"]
    lines.append(f"state cache after the warm phase: {cache.get('hits')} hits, {cache.get('misses')} misses, "
                 f"{cache.get('mb')} MB; answers that differ with the cache (float16 states): "
                 f"{results['answers_differing_with_cache']}")
    return "\n".join(lines)


def plot_serve_results(results: dict, path: Path) -> Path:
    """Throughput and p50 / p95 latency of every phase, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["phases"])
    phases = [results["phases"][n] for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.barh(names, [p["throughput_rps"] for p in phases], color="tab:blue")
    left.set_xlabel("requests / s")
    left.invert_yaxis()
    right.barh(names, [p["p95_ms"] or 0 for p in phases], color="tab:orange", alpha=0.5, label="p95")
    right.barh(names, [p["p50_ms"] or 0 for p in phases], color="tab:orange", label="p50")
    right.set_xlabel("latency (ms)")
    right.invert_yaxis()
    right.set_yticklabels([])
    right.legend()
    fig.suptitle(f"latentqa serve: {results['reader']['kind']} reader, {results['reader']['parameters'] / 1e6:.0f}M "
                 f"parameters, {results['reader']['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
