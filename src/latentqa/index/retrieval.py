"""Retrieval over an index: lexical (BM25), dense (the reader's own encoder) and a second hop through titles.

HotpotQA's bridge questions name only the first paragraph; the second is the one a first paragraph links to (its
title appears in the first one's text). So retrieval ranks *pairs*: for each of the first hop's best paragraphs
a, candidates b are the paragraphs a names, the best hits of the question plus a's title, and the other first-hop
paragraphs; a pair scores s(a) + s(b) + link_bonus when one names the other, where s = BM25 / best BM25 of the
question + dense_weight × cosine. The ranked list takes the pairs' paragraphs in order, then the first hop's.
The constants were chosen on training questions (docs/index.md).

Files it adds to an index folder, rebuilt from all shards at the end of a build that changed them:
    retrieval/DIGEST/bm25/               bm25s over "{title}. {sentences}", English stopwords, Snowball stemmer
    retrieval/DIGEST/links.safetensors   per paragraph, the rows of the paragraphs whose titles its text names (CSR)
    retrieval.json       written last: the manifest digest they were built from, their folder, each file's size
                         and hash. A reader opens only files that match it, so a build finishing beside a server
                         never hands it a half-written or mismatched file; a new build writes a new folder.
    retrieval/DIGEST/vectors.faiss       above `COMPRESS_ABOVE` windows only: their vectors as FAISS IVF-PQ codes
    retrieval/terms/SHARD_HASH.safetensors   each shard's paragraphs tokenized for BM25 (stemming is most of BM25's
                         cost), kept across builds: a build tokenizes only the shards it has not seen, and BM25's
                         table is then made from the token ids of all
    retrieval/links/                     each shard's paragraphs' named titles, kept across builds (`links.py`)
Below that, the vectors need no file of their own: the shards hold them, and retrieval reads them into memory and
searches them exactly. Above it, memory holds the codes (about 1/16 of the fp16 vectors) and the candidates they
give are scored again with their exact vectors, read from the shards.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.numpy

from ..atomic import remove_dead_temps, temp_path, write_file, write_text
from ..config import COMPRESS_ABOVE, option
from ..data.examples import Paragraph
from .lexical import Lexical, Tokens, bm25, stemmer
from .links import LINKS_DIR, build_links, remove_unlisted
from .manifest import IndexFolderError, ShardEntry, file_sha256
from .store import REBUILD, IndexStore

log = logging.getLogger(__name__)

BM25_DIR, LINKS_FILE, VECTORS_FILE, TERMS_DIR = "bm25", "links.safetensors", "vectors.faiss", "terms"
NPROBE = 16  # IVF lists searched a query
TRAINING_VECTORS = 100_000  # at most, spread over the index, to train IVF-PQ on
RETRIEVAL_DIR = "retrieval"
BUILT_FILE = "retrieval.json"  # written last: which manifest the files were built from, and the files
METHODS = ("bm25", "dense", "fused", "two-hop")


@dataclass(frozen=True)
class RetrievalConfig:
    """How an index ranks paragraphs for a question; the defaults were chosen on training questions (docs/index.md)."""

    method: str = option("two-hop", f"one of {METHODS}")
    first_hop: int = option(10, "first-hop paragraphs whose pairs are scored")
    second_hop: int = option(5, "BM25 hits of the question plus a first-hop paragraph's title, as its partners")
    dense_weight: float = option(2.0, "weight of the dense cosine beside BM25 over the question's best BM25")
    link_bonus: float = option(1.0, "added to a pair where one paragraph names the other's title")
    dense_depth: int = option(200, "windows the vector index returns per query")

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"retrieval method must be one of {METHODS}, got {self.method!r}")


@dataclass(frozen=True)
class Hit:
    row: int
    title: str
    score: float


def _document(paragraph: Paragraph) -> str:
    return f"{paragraph.title}. {' '.join(paragraph.sentences)}"


def compressed_vectors(store: IndexStore):
    """Every window's vector in FAISS IVF-PQ: about 4·sqrt(W) lists (at most one per 39 training windows), product
    codes of 8 dimensions a byte, trained on at most `TRAINING_VECTORS` windows spread over the index and filled a
    shard at a time (memory: the codes)."""
    import faiss

    count = store.num_windows
    width = store.window_vectors(np.arange(1)).shape[1]
    training = np.unique(np.linspace(0, count - 1, min(count, TRAINING_VECTORS)).astype(int))
    lists = max(1, min(int(4 * count ** 0.5), len(training) // 39))  # FAISS wants at least 39 training points a list
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(width), width, lists, width // 8, 8, faiss.METRIC_INNER_PRODUCT)
    index.train(store.window_vectors(training))
    for start in range(0, count, 2**16):
        index.add(store.window_vectors(np.arange(start, min(start + 2**16, count))))
    index.nprobe = min(NPROBE, lists)
    return index


def build_retrieval(store: IndexStore, compress_above: int = COMPRESS_ABOVE) -> None:
    """Write the lexical index and the links of every paragraph in `store` (and, past `compress_above` windows,
    the compressed vector index) into a new folder, then `retrieval.json`, then remove the folders of earlier
    builds. The caller holds the index folder's lock."""
    directory, digest = store.directory, store.manifest.digest()
    root = directory / RETRIEVAL_DIR
    root.mkdir(exist_ok=True)
    remove_dead_temps(root)
    folder = root / digest[:16]
    tmp = temp_path(folder)
    tmp.mkdir()
    lexical = bm25()
    lexical.index(lexical_tokens(store), show_progress=False)
    lexical.save(str(tmp / BM25_DIR))
    shards = [(entry.sha256, entry.paragraphs) for entry in store.manifest.shards]
    indptr, indices = build_links(root / LINKS_DIR, shards, store.paragraphs, Lexical(lexical))
    safetensors.numpy.save_file({"indptr": indptr, "indices": indices}, str(tmp / LINKS_FILE))
    if store.num_windows > compress_above:
        import faiss

        faiss.write_index(compressed_vectors(store), str(tmp / VECTORS_FILE))
    files = {str(f.relative_to(tmp)): {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
             for f in sorted(tmp.rglob("*")) if f.is_file()}
    shutil.rmtree(folder, ignore_errors=True)  # a folder of this digest left by a killed build: not trusted
    tmp.rename(folder)
    write_text(directory / BUILT_FILE, json.dumps({"manifest": digest, "folder": f"{RETRIEVAL_DIR}/{folder.name}",
                                                    "files": files}, indent=1))
    for old in root.iterdir():
        if old not in (folder, root / TERMS_DIR, root / LINKS_DIR) and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    kept = {_terms_path(store.directory, entry) for entry in store.manifest.shards}
    for old in (root / TERMS_DIR).iterdir():  # the terms of shards that left the index, and dead temporaries
        if old not in kept:
            old.unlink(missing_ok=True)
    remove_unlisted(root / LINKS_DIR, shards)


def _terms_path(directory: Path, entry: ShardEntry) -> Path:
    return directory / RETRIEVAL_DIR / TERMS_DIR / f"{entry.sha256[:32]}.safetensors"


def shard_terms(store: IndexStore, entry: ShardEntry, first_row: int):
    """The paragraphs of a shard (rows from `first_row`) as BM25 tokens: (its vocabulary, every token's place in
    it, where each paragraph's tokens start), read from retrieval/terms/ or tokenized (English stopwords, Snowball
    stemmer) and kept there. A file that cannot be read or does not fit the shard is tokenized again."""
    import bm25s

    path = _terms_path(store.directory, entry)
    try:
        stored = safetensors.numpy.load_file(str(path))
        vocab = json.loads(bytes(stored["vocab"]).decode("utf-8"))
        ids, starts = stored["ids"], stored["starts"]
        if len(starts) == entry.paragraphs + 1 and starts[-1] == len(ids) and (ids < len(vocab)).all():
            return vocab, ids, starts
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, safetensors.SafetensorError) as err:
        log.warning("%s: unreadable (%s); the shard is tokenized again", path, type(err).__name__)
    paragraphs = store.paragraphs[first_row:first_row + entry.paragraphs]
    tokens = bm25s.tokenize([_document(p) for p in paragraphs], stopwords="en", stemmer=stemmer(),
                            show_progress=False)
    vocab = sorted(tokens.vocab, key=tokens.vocab.get)
    ids = np.asarray([i for doc in tokens.ids for i in doc], dtype=np.int64)
    starts = np.cumsum([0] + [len(doc) for doc in tokens.ids]).astype(np.int64)
    text = np.frombuffer(json.dumps(vocab, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(exist_ok=True)
    write_file(path, lambda tmp: safetensors.numpy.save_file({"vocab": text, "ids": ids, "starts": starts}, str(tmp)),
               durable=False)  # checked when read; a lost file is tokenized again
    return vocab, ids, starts


def lexical_tokens(store: IndexStore) -> Tokens:
    """Every paragraph's BM25 tokens, shard by shard (`shard_terms`), in one vocabulary: what BM25 indexes. BM25
    scores do not depend on the tokens' numbering, so an index grown shard by shard scores as one built at once."""
    vocab: dict[str, int] = {}
    ids, starts, row = [], [np.zeros(1, dtype=np.int64)], 0
    for entry in store.manifest.shards:
        local, shard_ids, shard_starts = shard_terms(store, entry, row)
        row += entry.paragraphs
        ids.append(np.asarray([vocab.setdefault(term, len(vocab)) for term in local], dtype=np.int64)[shard_ids])
        starts.append(starts[-1][-1] + shard_starts[1:])
    return Tokens(ids=(np.concatenate(ids), np.concatenate(starts)), vocab=vocab)


def retrieval_files(store: IndexStore) -> Path:
    """The folder of retrieval files built for exactly `store`'s shards, checked against `retrieval.json`; one line
    naming the file and what to run where anything differs."""
    path = store.directory / BUILT_FILE
    try:
        built = json.loads(path.read_text())
        digest, folder, files = built["manifest"], store.directory / built["folder"], built["files"]
    except FileNotFoundError:
        raise IndexFolderError(f"{store.directory}: no retrieval files (a build was interrupted before its end); "
                               f"{REBUILD}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise IndexFolderError(f"{path}: unreadable ({type(err).__name__}); {REBUILD}") from None
    if digest != store.manifest.digest():
        raise IndexFolderError(f"{path}: built for other shards than the manifest lists (a build was interrupted "
                               f"before its end); {REBUILD}")
    for name, expected in files.items():
        file = folder / name
        if not file.is_file() or file.stat().st_size != expected["bytes"] or file_sha256(file) != expected["sha256"]:
            raise IndexFolderError(f"{file}: missing or damaged (it differs from {BUILT_FILE}); {REBUILD}")
    return folder


def retrieval_current(store: IndexStore, compress_above: int = COMPRESS_ABOVE) -> bool:
    """Whether the retrieval files cover exactly `store`'s shards, are whole, and hold the vectors compressed
    exactly when the index has more than `compress_above` windows."""
    try:
        folder = retrieval_files(store)
    except IndexFolderError:
        return False
    return (folder / VECTORS_FILE).is_file() == (store.num_windows > compress_above)


class Retriever:
    """Ranked paragraphs of an index for a question (its text and its unit vector from the reader's encoder)."""

    def __init__(self, store: IndexStore, config: RetrievalConfig = RetrievalConfig()):
        import faiss

        folder = retrieval_files(store)
        self.store, self.config = store, config
        self.window_paragraph = store.window_paragraphs()
        try:  # the files match retrieval.json's hashes (written by a build of ours); what remains is a wrong write
            compressed = (folder / VECTORS_FILE).is_file()
            self.vector_index = faiss.read_index(str(folder / VECTORS_FILE)) if compressed else None
            self.vectors = None if compressed else store.vectors()  # (W, H): searched exactly
            if compressed:
                self.vector_index.nprobe = min(NPROBE, self.vector_index.nlist)
            self.lexical = Lexical.load(folder / BM25_DIR)
            links = safetensors.numpy.load_file(str(folder / LINKS_FILE))
            self.link_indptr, self.link_indices = links["indptr"], links["indices"]
        except (OSError, ValueError, KeyError, RuntimeError, safetensors.SafetensorError) as err:
            raise IndexFolderError(f"{folder}: unreadable retrieval files ({type(err).__name__}); {REBUILD}") from None
        if len(self.link_indptr) != len(store) + 1 or self.lexical.num_docs != len(store) or (
                self.vector_index is not None and self.vector_index.ntotal != store.num_windows):
            raise IndexFolderError(f"{folder}: retrieval files for another number of paragraphs; {REBUILD}")

    def memory(self) -> dict[str, int]:
        """Bytes retrieval holds in memory: the vectors (or their codes and lists), BM25's arrays, the links."""
        if self.vectors is not None:
            vectors = self.vectors.nbytes
        else:  # the codes and their ids in the lists, the lists' centroids, the product quantizer's centroids
            index = self.vector_index
            vectors = index.ntotal * (index.code_size + 8) + index.nlist * index.d * 4 + index.pq.centroids.size() * 4
        return {"vectors": int(vectors), "bm25": self.lexical.nbytes,
                "links": int(self.link_indptr.nbytes + self.link_indices.nbytes + self.window_paragraph.nbytes)}

    def links(self, row: int) -> np.ndarray:
        return self.link_indices[self.link_indptr[row]:self.link_indptr[row + 1]]

    def lexical_scores(self, query: str) -> np.ndarray:
        """BM25 of `query` against every paragraph, (P,); zeros for a query with no indexed term ("?", "Is it?").
        Past `MAX_QUERY_TERMS` distinct terms the rest are left out (`lexical.py`)."""
        return self.lexical.scores([self.lexical.part(query)])

    def window_vectors(self, windows: np.ndarray) -> np.ndarray:
        return self.vectors[windows] if self.vectors is not None else self.store.window_vectors(windows)

    def dense_scores(self, vector: np.ndarray, rows: np.ndarray | None = None) -> dict[int, float]:
        """Each paragraph's best window cosine with the question vector (exact): over the `dense_depth` windows
        nearest to it (exactly, or the compressed index's candidates), or over all windows of `rows`."""
        vector = vector.astype(np.float32)
        if rows is not None:
            bounds = self.store.paragraph_windows
            windows = np.concatenate([np.arange(bounds[r], bounds[r + 1]) for r in rows])
        elif self.vectors is not None:
            cosines = self.vectors @ vector
            depth = min(self.config.dense_depth, len(cosines))
            windows = np.argpartition(-cosines, depth - 1)[:depth]
        else:
            _, found = self.vector_index.search(vector[None], self.config.dense_depth)
            windows = found[0][found[0] >= 0]
        pairs = zip(self.window_paragraph[windows].tolist(), (self.window_vectors(windows) @ vector).tolist())
        best: dict[int, float] = {}
        for row, score in pairs:
            best[row] = max(score, best.get(row, -1.0))
        return best

    def search(self, question: str, vector: np.ndarray, k: int = 10) -> list[Hit]:
        """The `k` best paragraphs by the configured method, best first."""
        c = self.config
        if c.method == "dense":
            ranked = sorted(self.dense_scores(vector).items(), key=lambda kv: -kv[1])[:k]
            return self._hits(ranked)
        asked = self.lexical.part(question)
        lexical = self.lexical.scores([asked])  # every paragraph's, once: the hops below look it up
        if c.method == "bm25":
            rows, scores = self.lexical.top(lexical, k)
            return self._hits(zip(rows.tolist(), scores.tolist()))
        depth = max(k, c.first_hop)
        best, best_scores = self.lexical.top(lexical, depth)
        top = max(float(best_scores[0]), 1e-9)
        dense = self.dense_scores(vector)

        def fused(rows) -> dict[int, float]:
            rows = np.asarray(sorted(rows), dtype=np.int64)
            cosines = self.dense_scores(vector, rows)
            return {r: lexical[r] / top + c.dense_weight * cosines[r] for r in rows.tolist()}

        first = fused(set(best.tolist()) | set(sorted(dense, key=dense.get, reverse=True)[:depth]))
        ranked_first = sorted(first.items(), key=lambda kv: -kv[1])
        if c.method == "fused":
            return self._hits(ranked_first[:k])
        return self._hits(self._pairs(lexical, best, ranked_first, fused)[:k])

    def _pairs(self, lexical: np.ndarray, best: np.ndarray, ranked_first: list[tuple[int, float]],
               fused) -> list[tuple[int, float]]:
        c = self.config
        heads = [row for row, _ in ranked_first[:c.first_hop]]
        candidates = {a: set(self.links(a).tolist()) | set(heads) for a in heads}
        if len(best) < c.second_hop + 1:
            best = self.lexical.top(lexical, c.second_hop + 1)[0]
        titles = self.lexical.parts([self.store.paragraphs.titles[a] for a in heads])
        for a, title in zip(heads, titles):  # BM25 adds over terms: the question and a's title, the question once
            candidates[a] |= set(self.lexical.top_with(lexical, best, title, c.second_hop + 1).tolist())
            candidates[a].discard(a)
        score = fused(set(heads).union(*candidates.values()))
        names = {row: set(self.links(row).tolist()) for row in score}
        pairs = {}
        for a in heads:
            for b in candidates[a]:
                bonus = c.link_bonus if b in names[a] or a in names[b] else 0.0
                key = (min(a, b), max(a, b))
                pairs[key] = max(pairs.get(key, -np.inf), score[a] + score[b] + bonus)
        ranked, seen = [], set()
        for (a, b), value in sorted(pairs.items(), key=lambda kv: -kv[1]):
            for row in sorted((a, b), key=lambda r: -score[r]):
                if row not in seen:
                    seen.add(row)
                    ranked.append((row, float(value)))
        return ranked + [(row, s) for row, s in ranked_first if row not in seen]

    def _hits(self, ranked) -> list[Hit]:
        return [Hit(int(row), self.store.paragraphs.titles[row], round(float(score), 6)) for row, score in ranked]


def both_gold_recall(ranked: list[list[str]], gold: list[set[str]], ks=(2, 5, 10, 20)) -> dict[int, float]:
    """Share of questions whose gold titles are all in the top k of their ranked titles."""
    return {k: round(float(np.mean([g <= set(r[:k]) for r, g in zip(ranked, gold)])), 4) for k in ks}
