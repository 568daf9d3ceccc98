"""`latentqa bench-index`: an index measured in one run, every ratio from figures taken side by side.

1. Retrieval: both-gold recall@2/5/10/20 of BM25, dense, fused and two-hop retrieval over a labelled source's
   questions (their own paragraphs ignored).
2. Time per question answered from the index (retrieve, then read the stored states) beside the same reader given
   the same retrieved paragraphs and encoding them live, at batch 1 and batch 8; repeats interleaved
   (`timing.interleaved`), medians with their spread.
3. Build: a slice of the index's paragraphs indexed again into a scratch folder: paragraphs a second, and the share
   of the build's time spent in the encoder (1.0: the store costs nothing).
4. Size: bytes a paragraph on disk and retrieval's memory; and the vectors compressed as an index of more than
   `COMPRESS_ABOVE` windows holds them (FAISS IVF-PQ, 8 dimensions a byte, candidates scored again exactly): the
   recall of dense and two-hop retrieval over them, and the memory.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path


from ..config import TOP_K
from ..data.sources import load_examples
from ..index.build import build_index
from ..index.retrieval import METHODS, both_gold_recall, compressed_vectors
from ..index.store import Header
from ..progress import progress_bar
from .timing import interleaved, machine, spread


def run_index_bench(index: str | Path, data: str, *, model: str | None = None, questions: int = 200,
                    timed_questions: int = 8, top_k: int = TOP_K, repeats: int = 5, build_paragraphs: int = 256,
                    max_new_tokens: int = 16, out_dir: str | Path = "runs/bench-index") -> dict:
    from ..serving.pipeline import load_reader

    index = Path(index)
    model = model or Header.read(index).reader
    indexed = load_reader(model, cache_mb=0, index=index, top_k=top_k, batch_size=8)
    live = load_reader(model, cache_mb=0, batch_size=8)
    store, retriever = indexed.retriever.store, indexed.retriever
    examples, _ = load_examples(data, limit=questions)
    gold = [{title for title, _ in ex.supporting_facts} for ex in examples]
    held = sum(title in store.rows for g in gold for title in g) / max(sum(map(len, gold)), 1)

    vectors = [indexed.question_vector(ex.question) for ex in progress_bar(examples, desc="questions", unit="q")]
    chosen = retriever.config

    def recall_of(methods) -> dict:
        recall = {}
        for method in methods:
            retriever.config = dataclasses.replace(chosen, method=method)
            ranked = [[hit.title for hit in retriever.search(ex.question, vector, 20)]
                      for ex, vector in zip(progress_bar(examples, desc=method, unit="q"), vectors)]
            recall[method] = both_gold_recall(ranked, gold)
        retriever.config = chosen
        return recall

    recall = recall_of(METHODS)
    exact = retriever.vectors, retriever.vector_index, retriever.memory()
    retriever.vectors, retriever.vector_index = None, compressed_vectors(store)  # as above `COMPRESS_ABOVE`
    compressed = {"kind": f"IVF{retriever.vector_index.nlist},PQ{retriever.vector_index.pq.M}x8, nprobe "
                          f"{retriever.vector_index.nprobe}", "bytes_per_vector": retriever.vector_index.pq.M,
                  "recall_both_gold": recall_of(("dense", "two-hop")), "memory": retriever.memory()}
    retriever.vectors, retriever.vector_index, memory = exact

    timing = {}
    for batch in (1, 8):
        asked = [ex.question for ex in examples[:max(batch, timed_questions)]][:batch]
        given = [[(p.title, list(p.sentences)) for p in (store.paragraphs[h.row] for h in indexed.retrieve(q))]
                 for q in asked]
        tasks = {
            "index": lambda: indexed.answer_batch([{"question": q} for q in asked], max_new_tokens=max_new_tokens),
            "live": lambda: live.answer_batch([{"question": q, "paragraphs": p} for q, p in zip(asked, given)],
                                              max_new_tokens=max_new_tokens),
            "retrieve": lambda: [indexed.retrieve(q) for q in asked],
        }
        seconds = interleaved(tasks, warmup=1, repeats=repeats, sync=lambda: None)
        per_question = {name: spread([s / batch for s in values]) for name, values in seconds.items()}
        ratios = [a / b for a, b in zip(seconds["index"], seconds["live"])]
        timing[f"batch_{batch}"] = {"seconds_per_question": per_question, "index_over_live": spread(ratios)}

    with tempfile.TemporaryDirectory() as scratch:
        report = build_index(indexed.reader, store.paragraphs[:build_paragraphs], Path(scratch) / "index",
                             reader_name=str(model), shard_paragraphs=min(256, build_paragraphs), progress=False)
    size = sum(f.stat().st_size for f in index.rglob("*") if f.is_file())
    results = {
        "index": str(index), "model": str(model), "paragraphs": len(store), "windows": store.num_windows,
        "questions": len(examples), "gold_paragraphs_in_index": round(held, 4), "top_k": top_k,
        "retrieval_config": dataclasses.asdict(chosen), "recall_both_gold": recall,
        "compressed_vectors": compressed, "timing": timing, "memory": memory,
        "build": {"paragraphs": report.added, "paragraphs_per_s": round(report.added / report.seconds, 2),
                  "encoder_share": round(report.encode_seconds / report.seconds, 4)},
        "bytes_per_paragraph": round(size / len(store)), "bytes": size, "machine": machine(indexed.device),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-index.json").write_text(json.dumps(results, indent=2))
    return results


def format_index_results(r: dict) -> str:
    lines = [f"index {r['index']}: {r['paragraphs']} paragraphs, {r['windows']} windows, "
             f"{r['bytes_per_paragraph'] / 1024:.1f} KB a paragraph; {r['questions']} questions "
             f"({r['gold_paragraphs_in_index']:.0%} of their gold paragraphs in the index)",
             "both-gold recall   @2     @5     @10    @20"]
    for method, figures in r["recall_both_gold"].items():
        lines.append(f"  {method:<15}" + "".join(f"{figures[k]:>7.3f}" for k in (2, 5, 10, 20)))
    c = r["compressed_vectors"]
    for method, figures in c["recall_both_gold"].items():
        lines.append(f"  {method + ', ' + str(c['bytes_per_vector']) + ' B':<15}" +
                     "".join(f"{figures[k]:>7.3f}" for k in (2, 5, 10, 20)) + f"   ({c['kind']})")
    mb = lambda memory: f"{sum(memory.values()) / 2**20:.1f} MB (vectors {memory['vectors'] / 2**20:.1f})"
    lines.append(f"retrieval memory: {mb(r['memory'])}; with the vectors compressed {mb(c['memory'])}")
    for batch, t in r["timing"].items():
        s, ratio = t["seconds_per_question"], t["index_over_live"]
        lines.append(f"{batch.replace('_', ' ')}: from the index {s['index']['median'] * 1000:.0f} ms a question "
                     f"(retrieval {s['retrieve']['median'] * 1000:.0f} ms), encoding the same paragraphs live "
                     f"{s['live']['median'] * 1000:.0f} ms: ratio {ratio['median']:.3f} "
                     f"({ratio['min']:.3f}-{ratio['max']:.3f})")
    b = r["build"]
    lines.append(f"build: {b['paragraphs_per_s']:.1f} paragraphs/s, {b['encoder_share']:.1%} of the time in the "
                 "encoder")
    return "\n".join(lines)
