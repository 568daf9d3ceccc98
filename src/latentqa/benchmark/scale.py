"""`latentqa bench-scale`: the index measured at growing sizes, on synthetic paragraphs, with the real storage,
vectors, BM25 and title links and a stand-in encoder, so that what is measured is the index and not the encoder.

- Corpus: paragraph i is made from the shipped sample's words, drawn by their frequency there, with the sentence
  lengths (in words) of a sample paragraph drawn at random, and names 1-2 earlier paragraphs' titles (title links).
  Titles are pairs of words seen once in the sample, unique up to about 12 M paragraphs. Paragraph i is the same
  whatever N, so the corpus of N is the first N paragraphs of every larger one.
- Stand-in reader: a latent reader whose context encoder is a BERT of MiniLM's width (384) and 512 positions with
  no layers (embeddings only) and a WordPiece tokenizer trained on the sample: windows, states and vectors of the
  real shapes for a fraction of the encoder's cost. The real encoder's throughput is measured separately
  (`encoder_throughput`).
- Each size is built, then queried, in a fresh process of its own, so its memory is its own: the build's peak
  resident memory; the queries' resident memory once the index is open (minus the process before); query latency
  at batch 1 (two-hop retrieval of the top 10, then their stored states read), on one thread, for questions made
  like HotpotQA's (`synthetic_question`).
- Each figure's growth is fitted as a power of N (the slope of log figure against log N) and carried to
  `FULLWIKI_PARAGRAPHS`, with the assumptions written next to the figures.
"""
from __future__ import annotations

import json
import math
import os
import resource
import shutil
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..config import COMPRESS_ABOVE, TOP_K
from ..data.examples import Paragraph
from ..index.links import WORD
from ..progress import progress_bar
from ..resources import SAMPLE_PATH

FULLWIKI_PARAGRAPHS = 5_233_329  # the introductory paragraphs of HotpotQA's fullwiki Wikipedia dump
STANDIN_WIDTH, STANDIN_POSITIONS, STANDIN_VOCAB = 384, 512, 8000  # MiniLM's width and positions
SERIES = {  # what is fitted and carried to the full corpus: (figure key, unit)
    "build_seconds_without_encoder": "s", "bytes": "B", "build_peak_rss_mb": "MB", "query_rss_mb": "MB",
    "query_anon_mb": "MB",
    "query_p50_ms": "ms", "query_p99_ms": "ms"}


class SyntheticCorpus:
    """Paragraphs of sample words; see the module docstring."""

    def __init__(self, seed: int = 0):
        from ..data.sources import load_examples
        examples, _ = load_examples(str(SAMPLE_PATH))
        paragraphs = {p.title: p for ex in examples for p in ex.paragraphs}.values()
        counts = Counter(w for p in paragraphs for s in p.sentences for w in WORD.findall(s))
        self.words = sorted(counts, key=lambda w: (-counts[w], w))
        self.cdf = np.cumsum([counts[w] for w in self.words]) / sum(counts.values())
        self.shapes = [[max(1, len(WORD.findall(s))) for s in p.sentences] for p in paragraphs if p.sentences]
        rare = sorted({w.lower() for w in self.words if counts[w] == 1 and w.isalpha() and len(w) > 3})
        order = np.random.default_rng(seed).permutation(len(rare))
        self.title_words = [rare[i].capitalize() for i in order]
        self.seed = seed

    def title(self, i: int) -> str:
        n = len(self.title_words)
        if i >= n * n:
            raise ValueError(f"the synthetic corpus has {n * n} distinct titles, paragraph {i} asked for")
        return f"{self.title_words[i % n]} {self.title_words[(i // n + i) % n]}"

    def paragraph(self, i: int) -> Paragraph:
        rng = np.random.default_rng([self.seed, i])
        shape = self.shapes[rng.integers(len(self.shapes))]
        words = [self.words[j] for j in np.searchsorted(self.cdf, rng.random(sum(shape)), side="right")]
        bounds = np.cumsum([0, *shape])
        sentences = [" ".join(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        for _ in range(rng.integers(1, 3) if i else 0):  # a mention of an earlier paragraph
            at = rng.integers(len(sentences))
            sentences[at] += f" of {self.title(int(rng.integers(i)))}"
        return Paragraph(self.title(i), tuple(s[0].upper() + s[1:] + "." for s in sentences))

    def write(self, n: int, path: Path) -> Path:
        """The first `n` paragraphs as a corpus file (`data/corpus.py`'s JSONL)."""
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            for i in progress_bar(range(n), desc=f"corpus {n}", unit="paragraph", leave=False):
                p = self.paragraph(i)
                out.write(json.dumps({"title": p.title, "sentences": list(p.sentences)}, ensure_ascii=False) + "\n")
        return tmp.rename(path)


def build_standin_reader(out_dir: Path, seed: int = 0) -> Path:
    """The stand-in reader's folder (see the module docstring), built once and reused."""
    import torch
    from transformers import BertConfig, BertModel

    from ..assets import build_tiny_t5, corpus, train_wordpiece_tokenizer
    from ..data.sources import load_examples
    from ..readers.latent import LatentConfig, LatentReader

    reader_dir = out_dir / "standin-reader"
    if (reader_dir / "reader.json").is_file():
        return reader_dir
    texts = corpus(load_examples(str(SAMPLE_PATH))[0])
    tokenizer = train_wordpiece_tokenizer(texts, STANDIN_VOCAB)
    tokenizer.model_max_length = STANDIN_POSITIONS
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=STANDIN_WIDTH, num_hidden_layers=0,
                        num_attention_heads=8, intermediate_size=4 * STANDIN_WIDTH,
                        max_position_embeddings=STANDIN_POSITIONS, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(out_dir / "standin-encoder")
    tokenizer.save_pretrained(out_dir / "standin-encoder")
    t5 = build_tiny_t5(out_dir / "standin-t5", texts, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reader = LatentReader.build(str(t5), str(out_dir / "standin-encoder"), LatentConfig(
            num_latents=8, selector_heads=4, question_conditioning="latents", window_packing="sentence"))
    return reader.save_pretrained(reader_dir)


def _memory_mb() -> dict[str, float]:
    """Resident memory: all of it, the process's own (anonymous) and its mapped files' pages. The last are the
    page cache's, shared and given back under pressure, and how many count depends on what the cache holds."""
    fields, found = {"RssAnon": "anon", "RssFile": "file"}, {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in fields:
                found[fields[name]] = int(value.split()[0]) / 1024  # "RssAnon:  1234 kB"
    return {"rss": found["anon"] + found["file"], **found}


def _build_in_child(reader_dir: str, corpus_path: str, index_dir: str, states: str, compress_above: int) -> dict:
    import torch

    from ..data.corpus import load_corpus
    from ..index.build import build_index
    from ..readers.loading import load_reader_folder

    torch.set_num_threads(os.cpu_count() or 1)
    reader = load_reader_folder(reader_dir)
    paragraphs, _ = load_corpus(corpus_path)
    report = build_index(reader, paragraphs, index_dir, reader_name=reader_dir, states=states,
                         compress_above=compress_above)
    return {"paragraphs": report.paragraphs, "added": report.added, "windows": report.windows,
            "build_seconds": report.seconds,
            "encoder_seconds": report.encode_seconds, "retrieval_seconds": report.retrieval_seconds,
            "bytes": report.bytes, "build_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def synthetic_question(paragraph: Paragraph, rng: np.random.Generator) -> str:
    """A question shaped like HotpotQA's: about 18 words, an entity (the paragraph's title) among words of its text."""
    words = WORD.findall(" ".join(paragraph.sentences))
    picked = rng.choice(words, size=min(16, len(words)), replace=False).tolist()
    at = int(rng.integers(len(picked) + 1))
    return " ".join(picked[:at] + [paragraph.title] + picked[at:]) + "?"


def synthetic_vector(store, row: int, rng: np.random.Generator) -> np.ndarray:
    """The question's vector: the paragraph's first window's, turned by noise of half its length."""
    vector = store.window_vectors(np.asarray([store.paragraph_windows[row]]))[0]
    vector = vector + rng.normal(scale=0.5 / math.sqrt(len(vector)), size=len(vector)).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _query_in_child(index_dir: str, queries: int, seed: int) -> dict:
    import torch

    from ..index.retrieval import Retriever
    from ..index.store import IndexStore

    torch.set_num_threads(1)  # reading a few windows' states: a second thread only adds waits (p90 10x on 2 cores)

    before = _memory_mb()
    began = time.perf_counter()
    store = IndexStore(index_dir)
    retriever = Retriever(store)
    open_seconds = time.perf_counter() - began
    opened = _memory_mb()
    rng = np.random.default_rng(seed)
    asked = []
    for row in rng.integers(len(store), size=queries):
        asked.append((synthetic_question(store.paragraphs[row], rng), synthetic_vector(store, row, rng)))

    def answer_from_index(question, vector):
        for hit in retriever.search(question, vector, TOP_K):
            store.paragraph_states(hit.row)

    for question, vector in asked[:3]:
        answer_from_index(question, vector)
    seconds = []
    for question, vector in asked:
        start = time.perf_counter()
        answer_from_index(question, vector)
        seconds.append(time.perf_counter() - start)
    return {"open_seconds": open_seconds, **{f"query_{kind}_mb": opened[kind] - before[kind] for kind in opened},
            "retrieval_memory": retriever.memory(),
            "query_p50_ms": 1000 * statistics.median(seconds),
            "query_p99_ms": 1000 * float(np.quantile(seconds, 0.99)), "queries": queries}


def _in_child(fn, *args):
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def encoder_throughput(paragraphs: list[Paragraph]) -> dict | None:
    """Paragraphs a second that all-MiniLM-L6-v2 (the real encoder, 6 layers) encodes here, one window a sentence
    ("{title}: {sentence}", as the stand-in reader's windows); None where the pretrained package is not installed."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ..assets import pretrained_encoder_path
    from ..readers.state_cache import encode_windows

    try:
        folder = str(pretrained_encoder_path())
    except FileNotFoundError:
        return None
    encoder, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    windows = [torch.tensor(tokenizer(f"{p.title}: {s}", truncation=True)["input_ids"])
               for p in paragraphs for s in p.sentences]
    began = time.perf_counter()
    encode_windows(encoder, windows)
    seconds = time.perf_counter() - began
    return {"paragraphs": len(paragraphs), "seconds": round(seconds, 3),
            "paragraphs_per_s": round(len(paragraphs) / seconds, 2)}


def fit_power(sizes: list[int], values: list[float]) -> dict:
    """`values` ≈ a · N^slope, fitted by least squares on logs, and its value carried to the full corpus."""
    keep = [(n, v) for n, v in zip(sizes, values) if v > 0]
    if len(keep) < 2:
        return {"slope": None, "fullwiki": None}
    x, y = np.log([n for n, _ in keep]), np.log([v for _, v in keep])
    slope, intercept = np.polyfit(x, y, 1)
    largest, at_largest = keep[-1]
    return {"slope": round(float(slope), 3),
            "fullwiki": float(at_largest * (FULLWIKI_PARAGRAPHS / largest) ** slope)}


def run_scale_bench(sizes: list[int], *, states: str = "int8", queries: int = 200, compress_above: int = COMPRESS_ABOVE,
                    encoder_paragraphs: int = 64, grow: float = 0.01, keep: bool = False, seed: int = 0,
                    out_dir: str | Path = "runs/bench-scale") -> dict:
    """Build and query an index of each of `sizes` synthetic paragraphs, then grow it by the share `grow` of new
    ones; figures, fits and plot in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reader_dir = build_standin_reader(out, seed)
    corpus = SyntheticCorpus(seed)
    rows = []
    for n in sorted(set(sizes)):
        corpus_path = corpus.write(n, out / f"corpus-{n}.jsonl")
        index_dir = out / f"index-{n}"
        shutil.rmtree(index_dir, ignore_errors=True)
        built = _in_child(_build_in_child, str(reader_dir), str(corpus_path), str(index_dir), states, compress_above)
        queried = _in_child(_query_in_child, str(index_dir), queries, seed)
        row = {"n": n, **built, **queried,
               "build_seconds_without_encoder": built["build_seconds"] - built["encoder_seconds"],
               "bytes_per_paragraph": built["bytes"] / n, "windows_per_paragraph": built["windows"] / n,
               "vectors_compressed": built["windows"] > compress_above}
        if grow:  # what a build adding a few paragraphs to a large index costs, retrieval files included
            grown = corpus.write(n + max(1, round(n * grow)), out / f"corpus-{n}-grown.jsonl")
            row["grown"] = _in_child(_build_in_child, str(reader_dir), str(grown), str(index_dir), states,
                                     compress_above)
            grown.unlink()
        rows.append(row)
        print(format_row(row), file=sys.stderr, flush=True)
        if not keep:
            shutil.rmtree(index_dir)
            corpus_path.unlink()
        _write(out, {"sizes": rows})  # each size kept as soon as it is measured
    fits = {name: fit_power([r["n"] for r in rows], [r[name] for r in rows]) for name in SERIES}
    nlogn = fit_power([r["n"] for r in rows], [r["n"] * math.log(r["n"]) for r in rows])["slope"]
    encoder = encoder_throughput([corpus.paragraph(i) for i in range(encoder_paragraphs)]) if encoder_paragraphs \
        else None
    results = {"sizes": rows, "fits": fits, "n_log_n_slope": nlogn, "fullwiki_paragraphs": FULLWIKI_PARAGRAPHS,
               "states": states, "compress_above": compress_above, "queries": queries, "real_encoder": encoder,
               "assumptions": assumptions(states, encoder)}
    _write(out, results)
    plot_scale(results, out / "bench-scale.png")
    return results


def assumptions(states: str, encoder: dict | None) -> list[str]:
    lines = [
        f"states stored as {states}, one layer of 384 (the sp reader's; the answer preset stores two layers, about "
        "twice the states' bytes)",
        "paragraphs shaped like the sample's (sentence lengths in words drawn from its paragraphs); real Wikipedia "
        "introductions are of similar length",
        "figures carried to the full corpus as a power of N fitted on the sizes measured: a figure whose growth "
        "changes beyond them (memory past the machine's RAM, the page cache no longer holding the shards) is not "
        "foreseen",
        "query latency with the shards in the page cache, as on a machine whose RAM holds the index",
    ]
    if encoder:
        hours = FULLWIKI_PARAGRAPHS / encoder["paragraphs_per_s"] / 3600
        lines.append(f"the real encoder (all-MiniLM-L6-v2, 6 layers) encodes {encoder['paragraphs_per_s']:.1f} "
                     f"paragraphs a second on this machine: {hours:.0f} hours for the full corpus, in shards "
                     "processes can share (torchrun)")
    return lines


def _write(out: Path, results: dict) -> None:
    (out / "bench-scale.json").write_text(json.dumps(results, indent=2))


def format_row(r: dict) -> str:
    return (f"N={r['n']:>8}: build {r['build_seconds']:.1f} s ({r['build_seconds_without_encoder']:.1f} s without "
            f"the encoder, retrieval {r['retrieval_seconds']:.1f} s), {r['bytes_per_paragraph'] / 1024:.1f} KB a "
            f"paragraph, build peak {r['build_peak_rss_mb']:.0f} MB; open {r['open_seconds']:.1f} s, "
            f"{r['query_rss_mb']:.0f} MB ({r['query_anon_mb']:.0f} MB its own); query p50 {r['query_p50_ms']:.1f} ms, "
            f"p99 {r['query_p99_ms']:.1f} ms"
            + (" (vectors compressed)" if r["vectors_compressed"] else "")
            + (f"; grown by {r['grown']['paragraphs'] - r['n']}: build {r['grown']['build_seconds']:.1f} s, retrieval "
               f"{r['grown']['retrieval_seconds']:.1f} s" if "grown" in r else ""))


def format_scale_results(r: dict) -> str:
    lines = [format_row(row) for row in r["sizes"]]
    lines.append(f"growth as N^slope (N log N over these sizes: slope {r['n_log_n_slope']}), and at "
                 f"{r['fullwiki_paragraphs']:,} paragraphs:")
    for name, unit in SERIES.items():
        fit = r["fits"][name]
        if fit["slope"] is not None:
            lines.append(f"  {name:<30} slope {fit['slope']:>6.3f}   {fit['fullwiki']:>14,.1f} {unit}")
    lines += [f"assumption: {line}" for line in r["assumptions"]]
    return "\n".join(lines)


def plot_scale(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("build_seconds_without_encoder", "build without the encoder (s)"),
              ("bytes", "disk (B)"), ("query_rss_mb", "memory when open (MB)"),
              ("query_p50_ms", "query p50 / p99 (ms)")]
    sizes = [row["n"] for row in r["sizes"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, (name, title) in zip(axes, panels):
        ax.plot(sizes, [row[name] for row in r["sizes"]], "o-", label="measured")
        if name == "query_p50_ms":
            ax.plot(sizes, [row["query_p99_ms"] for row in r["sizes"]], "s--", label="p99")
        if name == "query_rss_mb":
            ax.plot(sizes, [row["query_anon_mb"] for row in r["sizes"]], "s--", label="its own (anonymous)")
        fit = r["fits"].get(name, {})
        if fit.get("fullwiki") is not None:
            ax.plot([sizes[-1], r["fullwiki_paragraphs"]], [r["sizes"][-1][name], fit["fullwiki"]], ":",
                    label=f"N^{fit['slope']:.2f} carried")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("paragraphs")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
