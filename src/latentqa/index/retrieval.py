"""Retrieval over an index: lexical (BM25), dense (the reader's own encoder) and a second hop through titles.

HotpotQA's bridge questions name only the first paragraph; the second is the one a first paragraph links to (its
title appears in the first one's text). So retrieval ranks *pairs*: for each of the first hop's best paragraphs
a, candidates b are the paragraphs a names, the best hits of the question plus a's title, and the other first-hop
paragraphs; a pair scores s(a) + s(b) + link_bonus when one names the other, where s = BM25 / best BM25 of the
question + dense_weight × cosine. The ranked list takes the pairs' paragraphs in order, then the first hop's.
The constants were chosen on training questions (docs/index.md).

Files it adds to an index folder, rebuilt from all shards at the end of every build:
    vectors.faiss        every window's vector, exact inner product (faiss IndexFlatIP)
    bm25/                bm25s over "{title}. {sentences}" with English stopwords and the Snowball stemmer
    links.safetensors    per paragraph, the rows of the paragraphs whose titles its text names (CSR)
    retrieval.json       written last: the paragraphs and windows they cover
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

import numpy as np
import safetensors.numpy

from ..atomic import write_file
from ..data.examples import Paragraph
from .store import IndexFolderError, IndexStore

log = logging.getLogger(__name__)

VECTORS_FILE, BM25_DIR, LINKS_FILE = "vectors.faiss", "bm25", "links.safetensors"
BUILT_FILE = "retrieval.json"  # written last: which shards the files above were built from
METHODS = ("bm25", "dense", "fused", "two-hop")
MAX_TITLE_WORDS = 10
WORD = re.compile(r"\w+")
DISAMBIGUATION = re.compile(r"\s*\([^)]*\)\s*$")  # "Alder (band)" is named "Alder" in text


@dataclass(frozen=True)
class RetrievalConfig:
    method: str = "two-hop"
    first_hop: int = 10  # A: first-hop paragraphs whose pairs are scored
    second_hop: int = 5  # B: hits of the question plus a first-hop title
    dense_weight: float = 2.0
    link_bonus: float = 1.0
    dense_depth: int = 200  # windows the vector index returns per query

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


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def _title_key(title: str) -> str:
    return " ".join(WORD.findall(DISAMBIGUATION.sub("", title).lower()))


def title_links(paragraphs: list[Paragraph]) -> tuple[np.ndarray, np.ndarray]:
    """For each paragraph, the other paragraphs whose title (lower case, without a trailing "(...)") its text
    names as whole words: CSR (indptr (P + 1,), indices)."""
    by_key: dict[str, list[int]] = {}
    for row, paragraph in enumerate(paragraphs):
        key = _title_key(paragraph.title)
        if key:
            by_key.setdefault(key, []).append(row)
    longest = min(MAX_TITLE_WORDS, max(len(key.split()) for key in by_key) if by_key else 1)
    indptr, indices = [0], []
    for row, paragraph in enumerate(paragraphs):
        words = WORD.findall(" ".join(paragraph.sentences).lower())
        named = {other for n in range(1, longest + 1) for i in range(len(words) - n + 1)
                 for other in by_key.get(" ".join(words[i:i + n]), ()) if other != row}
        indices += sorted(named)
        indptr.append(len(indices))
    return np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int64)


def build_retrieval(store: IndexStore) -> None:
    """Write the vector index, the lexical index and the links of every paragraph in `store`."""
    import bm25s
    import faiss

    directory = store.directory
    vectors = store.vectors()
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    write_file(directory / VECTORS_FILE, lambda tmp: faiss.write_index(flat, str(tmp)))
    lexical = bm25s.BM25()
    lexical.index(bm25s.tokenize([_document(p) for p in store.paragraphs], stopwords="en", stemmer=_stemmer(),
                                 show_progress=False), show_progress=False)
    lexical.save(str(directory / BM25_DIR))
    indptr, indices = title_links(store.paragraphs)
    write_file(directory / LINKS_FILE,
               lambda tmp: safetensors.numpy.save_file({"indptr": indptr, "indices": indices}, str(tmp)))
    write_file(directory / BUILT_FILE, lambda tmp: tmp.write_text(json.dumps(_coverage(store))))


def _coverage(store: IndexStore) -> dict:
    return {"paragraphs": len(store), "windows": store.num_windows}


def retrieval_current(store: IndexStore) -> bool:
    """Whether the retrieval files cover every shard of `store`."""
    try:
        return json.loads((store.directory / BUILT_FILE).read_text()) == _coverage(store)
    except (OSError, ValueError):
        return False


class Retriever:
    """Ranked paragraphs of an index for a question (its text and its unit vector from the reader's encoder)."""

    def __init__(self, store: IndexStore, config: RetrievalConfig = RetrievalConfig()):
        import bm25s
        import faiss

        directory = store.directory
        if not retrieval_current(store):
            raise IndexFolderError(f"{directory}: its retrieval files do not cover all {len(store)} paragraphs (a "
                                   "build was interrupted before the end): run `latentqa index` again")
        self.store, self.config = store, config
        self.vector_index = faiss.read_index(str(directory / VECTORS_FILE))
        self.vectors = store.vectors()
        self.window_paragraph = store.window_paragraphs()
        self.lexical = bm25s.BM25.load(str(directory / BM25_DIR))
        links = safetensors.numpy.load_file(str(directory / LINKS_FILE))
        self.link_indptr, self.link_indices = links["indptr"], links["indices"]
        self.stemmer = _stemmer()

    def links(self, row: int) -> np.ndarray:
        return self.link_indices[self.link_indptr[row]:self.link_indptr[row + 1]]

    def lexical_scores(self, query: str) -> np.ndarray:
        """BM25 of `query` against every paragraph, (P,)."""
        import bm25s

        tokens = bm25s.tokenize([query], stopwords="en", stemmer=self.stemmer, show_progress=False,
                                return_ids=False)[0]
        return np.asarray(self.lexical.get_scores(tokens), dtype=np.float64)

    def dense_scores(self, vector: np.ndarray, rows: np.ndarray | None = None) -> dict[int, float]:
        """Each paragraph's best window cosine with the question vector: over the vector index's top windows, or
        over all windows of `rows`."""
        if rows is None:
            scores, windows = self.vector_index.search(vector[None].astype(np.float32), self.config.dense_depth)
            pairs = zip(self.window_paragraph[windows[0][windows[0] >= 0]].tolist(), scores[0].tolist())
        else:
            bounds = self.store.paragraph_windows
            windows = np.concatenate([np.arange(bounds[r], bounds[r + 1]) for r in rows])
            pairs = zip(self.window_paragraph[windows].tolist(), (self.vectors[windows] @ vector).tolist())
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
        lexical = self.lexical_scores(question)
        if c.method == "bm25":
            rows = np.argsort(-lexical, kind="stable")[:k]
            return self._hits([(int(r), float(lexical[r])) for r in rows])
        top = max(float(lexical.max()), 1e-9)
        dense = self.dense_scores(vector)

        def fused(rows) -> dict[int, float]:
            cosines = self.dense_scores(vector, np.asarray(sorted(rows)))
            return {r: lexical[r] / top + c.dense_weight * cosines[r] for r in rows}

        depth = max(k, c.first_hop)
        first = fused(set(np.argsort(-lexical, kind="stable")[:depth].tolist())
                      | set(sorted(dense, key=dense.get, reverse=True)[:depth]))
        ranked_first = sorted(first.items(), key=lambda kv: -kv[1])
        if c.method == "fused":
            return self._hits(ranked_first[:k])
        return self._hits(self._pairs(question, ranked_first, fused)[:k])

    def _pairs(self, question: str, ranked_first: list[tuple[int, float]], fused) -> list[tuple[int, float]]:
        c = self.config
        heads = [row for row, _ in ranked_first[:c.first_hop]]
        candidates = {a: set(self.links(a).tolist()) | set(heads) for a in heads}
        for a in heads:
            hop = self.lexical_scores(f"{question} {self.store.paragraphs[a].title}")
            candidates[a] |= set(np.argsort(-hop, kind="stable")[:c.second_hop + 1].tolist())
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
        return [Hit(int(row), self.store.paragraphs[row].title, round(float(score), 6)) for row, score in ranked]


def both_gold_recall(ranked: list[list[str]], gold: list[set[str]], ks=(2, 5, 10, 20)) -> dict[int, float]:
    """Share of questions whose gold titles are all in the top k of their ranked titles."""
    return {k: round(float(np.mean([g <= set(r[:k]) for r, g in zip(ranked, gold)])), 4) for k in ks}
