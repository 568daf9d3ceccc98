"""BM25 over an index's paragraphs, scored from the postings of a question's terms.

bm25s keeps, per term, the BM25 share of every paragraph holding it (a CSC matrix: `indptr`, `indices` sorted by
paragraph, `data`). The table is built from arrays of token ids (`bm25_table`), bit for bit bm25s's own. Scores
equal bm25s's bit for bit: each paragraph's shares are added in float32 in the question's term order, as bm25s adds
them, whether into an array as long as the index (`Lexical.scores`), for chosen rows by binary search in the
postings, or for the rows the postings hold (`Scored`).

A query is a list of parts whose scores add (the question; the question and a paragraph's title); a part is its
distinct terms grouped by how often the text repeats them, [(count, term ids)], each group scored once and
weighted by its count.

Retrieval reads a question through `Lexical.query` (`Scored`): its shares are added for the rows its terms'
postings hold, its best k taken from those, and the second hop (the question plus a title) looks the question's
scores up for the title's postings. With a `depth`, a term held by more paragraphs than that reads only its `depth`
best shares (its champion list), so a question's cost stops growing with N; the `RESCORED` best rows by what was
read are then scored exactly and ranked by that. Where no term was cut, every ranking equals the exact one bit for
bit; where one was, the top k is the exact one only mostly, because an exact top k needs postings read to a depth
that grows with N (measured: docs/index.md). `latentqa bench-scale` measures how often it differs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_QUERY_TERMS = 256  # distinct terms of a query scored at most: bounds the work a question can ask for
RESCORED = 256  # rows scored exactly where a term's postings were cut: the best by the shares read
RESCORED_WITH_TITLE = 32  # the same for a second-hop query, whose candidates are mostly the question's, scored

Part = list[tuple[int, np.ndarray]]


def stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


@dataclass(frozen=True)
class Tokens:
    """A corpus's BM25 tokens as arrays: every token's term id, where each document's tokens start (P + 1), and
    the vocabulary (term -> id). `bm25s.BM25.index` takes it as it takes its own `Tokenized`."""

    ids: tuple[np.ndarray, np.ndarray]
    vocab: dict[str, int]


def bm25():
    """A bm25s.BM25 (BM25 as Lucene scores it, bm25s's default) whose `index` takes `Tokens` and builds its table
    with array operations (`bm25_table`), where bm25s loops over documents in Python, every token a Python int."""
    import bm25s

    class ArrayBM25(bm25s.BM25):
        def build_index_from_ids(self, unique_token_ids, corpus_token_ids, show_progress=True, leave_progress=False):
            if self.method != "lucene":
                raise ValueError(f"bm25_table computes Lucene's BM25, not {self.method!r}")
            ids, starts = corpus_token_ids
            self.nonoccurrence_array = None  # as bm25s sets it for Lucene's BM25 (saved with the table)
            return bm25_table(ids, starts, len(unique_token_ids), k1=self.k1, b=self.b)

    return ArrayBM25()


def bm25_table(ids: np.ndarray, starts: np.ndarray, vocab_size: int, k1: float, b: float) -> dict:
    """BM25 (Lucene's) of every (document, term) pair as bm25s stores it, a CSC matrix of float32 shares, and the
    same bit for bit (tested): each share computed with bm25s's operations in its order and dtypes (idf by
    `math.log`, the length norm in float64, stored as float32)."""
    num_docs = len(starts) - 1
    lengths = np.diff(starts).astype(np.int64)
    average = lengths.mean()  # as bm25s: the mean of an int64 array
    pairs, counts = np.unique(ids.astype(np.int64) * num_docs + np.repeat(np.arange(num_docs), lengths),
                              return_counts=True)  # term-major: (term, document) in CSC order
    terms, rows = np.divmod(pairs, num_docs)
    del pairs
    doc_freqs = np.bincount(terms, minlength=vocab_size)
    idf = np.zeros(vocab_size, dtype=np.float32)
    for term in np.flatnonzero(doc_freqs).tolist():
        df = int(doc_freqs[term])
        idf[term] = math.log(1 + (num_docs - df + 0.5) / (df + 0.5))
    tf = counts.astype(np.float32)
    tfc = tf / (k1 * ((1 - b) + b * lengths[rows] / average) + tf)  # float64, as bm25s's float64 length norm makes it
    data = (idf[terms] * tfc).astype(np.float32)
    indptr = np.concatenate([[0], np.cumsum(doc_freqs)]).astype(np.int64)
    return {"data": data, "indices": rows.astype(np.int32), "indptr": indptr, "num_docs": num_docs}  # scipy's dtypes


class Lexical:
    """A saved bm25s index, scored as the module docstring says."""

    def __init__(self, model, depth: int = 0):
        self.model = model
        scores = model.scores
        self.data, self.indices, self.indptr = scores["data"], scores["indices"], scores["indptr"]
        self.num_docs = int(scores["num_docs"])
        starts = self.indptr[:-1]
        ascending = np.diff(self.indices.astype(np.int64)) > 0
        ascending[starts[(starts > 0) & (starts < len(self.indices))] - 1] = True  # where one term's postings end
        if not ascending.all():  # binary search needs each term's rows in order (scipy's CSC keeps them so)
            raise ValueError("BM25 postings out of row order")
        self.stemmer = stemmer()
        self.depth = depth
        self.champions = {}  # term -> its `depth` best (rows ascending, shares), for terms held by more paragraphs
        for term in (np.flatnonzero(np.diff(self.indptr) > depth).tolist() if depth else []):
            rows, data = self._postings(term)
            best = np.sort(np.argpartition(-data, depth - 1)[:depth])
            self.champions[term] = (rows[best], data[best])

    @classmethod
    def load(cls, folder: Path, depth: int = 0) -> "Lexical":
        import bm25s

        return cls(bm25s.BM25.load(str(folder)), depth)

    @property
    def nbytes(self) -> int:
        champions = sum(rows.nbytes + shares.nbytes for rows, shares in self.champions.values())
        return int(self.data.nbytes + self.indices.nbytes + self.indptr.nbytes + champions)

    def part(self, text: str) -> Part:
        """`text`'s indexed terms (English stopwords, Snowball stemmer), the first `MAX_QUERY_TERMS` distinct ones,
        grouped by count, fewest first: a question of 400 repeated words costs what one word costs."""
        return self.parts([text])[0]

    def parts(self, texts: list[str]) -> list[Part]:
        """`part` of each text, tokenized in one call (a call costs more than a title's words)."""
        import bm25s

        found = []
        for tokens in bm25s.tokenize(texts, stopwords="en", stemmer=self.stemmer, show_progress=False,
                                     return_ids=False):
            ids = np.asarray(self.model.get_tokens_ids(tokens), dtype=np.int64)
            terms, first, counts = np.unique(ids, return_index=True, return_counts=True)
            keep = np.argsort(first, kind="stable")[:MAX_QUERY_TERMS]  # the query's first distinct terms
            terms, counts = terms[keep], counts[keep]
            found.append([(int(count), terms[counts == count]) for count in np.unique(counts)])
        return found

    def terms(self, text: str) -> list[int] | None:
        """`text`'s distinct indexed terms, rarest first; None where one of them is in no paragraph."""
        import bm25s

        tokens = bm25s.tokenize([text], stopwords="en", stemmer=self.stemmer, show_progress=False,
                                return_ids=False)[0]
        vocab = self.model.vocab_dict
        if any(token not in vocab for token in tokens):
            return None
        return sorted({vocab[token] for token in tokens}, key=lambda term: self.indptr[term + 1] - self.indptr[term])

    def postings(self, term: int) -> np.ndarray:
        """The rows of the paragraphs holding `term`, ascending."""
        return self._postings(term)[0]

    def _postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.indptr[term], self.indptr[term + 1]
        return self.indices[start:end], self.data[start:end]

    def _read(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """What a query reads of `term`: its champion list, or all its postings."""
        return self.champions.get(term) or self._postings(term)

    def query(self, parts: list[Part]) -> "Scored":
        return Scored(self, parts)

    def scores(self, parts: list[Part], rows: np.ndarray | None = None) -> np.ndarray:
        """BM25 of the query for each of `rows` (distinct, in any order; None: every paragraph), float64."""
        size = self.num_docs if rows is None else len(rows)
        total = np.zeros(size, dtype=np.float64)
        for part in parts:
            scores = np.zeros(size, dtype=np.float64)
            for count, terms in part:
                shares = np.zeros(size, dtype=np.float32)  # added in term order, in float32, as bm25s does
                for term in terms.tolist():
                    held, data = self._postings(term)
                    if rows is None:
                        shares[held] += data
                        continue
                    at = np.searchsorted(held, rows)
                    found = at < len(held)
                    found[found] = held[at[found]] == rows[found]
                    shares[found] += data[at[found]]
                scores += shares if count == 1 else count * shares  # weighted in float32; 1 × x is x
            total += scores
        return total

    @staticmethod
    def top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best rows of `scores` (every paragraph's, from `scores(parts)`) and their scores, best first, ties
        by row: what a stable sort of every score gives, from one partition instead of a sort."""
        k = min(k, len(scores))
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        above = np.flatnonzero(scores > kth)
        rows = np.concatenate([above, np.flatnonzero(scores == kth)[:k - len(above)]])
        order = np.lexsort((rows, -scores[rows]))
        return rows[order], scores[rows[order]]



class Scored:
    """A query's BM25 as retrieval reads it: its best rows, and any row's exact score. `rows` are the rows its
    terms' read postings hold (ascending), `read` their scores from those postings: each row's exact score where
    no term was `cut`, else at most it."""

    def __init__(self, lexical: Lexical, parts: list[Part]):
        self.lexical, self.parts, self._best, self._exact = lexical, parts, {}, {}
        terms = [term for part in parts for _, group in part for term in group.tolist()]
        self.cut = any(term in lexical.champions for term in terms)
        self.rows = _distinct([lexical._read(term)[0] for term in terms])
        self.read = np.zeros(len(self.rows), dtype=np.float64)
        for part in parts:  # in `Lexical.scores`'s order and dtypes: equal to it bit for bit on these rows
            scores = np.zeros(len(self.rows), dtype=np.float64)
            for count, terms in part:
                shares = np.zeros(lexical.num_docs, dtype=np.float32)  # its pages touched only where rows are read
                for term in terms.tolist():
                    rows, data = lexical._read(term)
                    shares[rows] += data
                shares = shares[self.rows]
                scores += shares if count == 1 else count * shares
            self.read += scores

    def at(self, rows: np.ndarray) -> np.ndarray:
        """The exact scores of `rows` (distinct, any order), each row's found once by binary search and kept: the
        second hop asks again for the question's best rows with each title."""
        rows = np.asarray(rows, dtype=np.int64).tolist()
        new = [row for row in rows if row not in self._exact]
        if new:
            self._exact.update(zip(new, self.lexical.scores(self.parts, np.asarray(new, dtype=np.int64)).tolist()))
        return np.asarray([self._exact[row] for row in rows], dtype=np.float64)

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best rows and their exact scores, best first, ties by row (`Lexical.top` over every score, where
        no term was cut)."""
        if k in self._best:  # the second hop asks for the same k for each first-hop paragraph
            return self._best[k]
        rows, scores = self._rank(self.rows, self.read, self.cut, k, RESCORED, lambda at: self.at(self.rows[at]))
        wanted = min(k, self.lexical.num_docs)
        if len(rows) < wanted:  # rows no term holds score 0: after every held row, by row
            unheld = np.setdiff1d(np.arange(wanted + len(self.rows)), self.rows)[:wanted - len(rows)]
            rows, scores = np.concatenate([rows, unheld]), np.concatenate([scores, np.zeros(len(unheld))])
        self._best[k] = rows, scores
        return rows, scores

    def top_with(self, extra: Part, k: int) -> np.ndarray:
        """The `k` best rows for the query plus a part `extra` (a title): the same as `Lexical.top` over
        `scores(parts + [extra])` where no term was cut. A row outside `extra`'s postings scores the query's
        score alone, so only the query's best k and those postings compete."""
        lexical = self.lexical
        rows = _distinct([self.top(k)[0], *(lexical._read(term)[0] for _, terms in extra for term in terms.tolist())])
        at = np.searchsorted(self.rows, rows)
        found = at < len(self.rows)
        found[found] = self.rows[at[found]] == rows[found]
        base = np.zeros(len(rows))  # 0: a row the query's read postings miss
        base[found] = self.read[at[found]]
        added = lexical.scores([extra], rows)
        scores = base + added  # as `Lexical.scores` adds a query's parts
        cut = self.cut or any(term in lexical.champions for _, terms in extra for term in terms.tolist())
        return self._rank(rows, scores, cut, k, RESCORED_WITH_TITLE, lambda at: self.at(rows[at]) + added[at])[0]

    @staticmethod
    def _rank(rows, scores, cut, k, rescored, exact) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best of `rows` (ascending) by `scores`, or, where postings were cut, the `rescored` best by
        `scores` ranked by `exact` (a function of their places in `rows`); ties by row."""
        if cut:
            chosen = np.sort(Lexical.top(scores, max(k, rescored))[0])
            rows, scores = rows[chosen], exact(chosen)
        best, best_scores = Lexical.top(scores, k)
        return rows[best], best_scores


def _distinct(rows: list[np.ndarray]) -> np.ndarray:
    """The distinct rows of several arrays, ascending (a sort: several times faster than `np.unique`'s hash here)."""
    held = np.sort(np.concatenate([np.zeros(0, dtype=np.int64), *rows]))
    return held[np.concatenate([[True], held[1:] != held[:-1]])] if len(held) else held
