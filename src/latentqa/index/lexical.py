"""BM25 over an index's paragraphs, scored from the postings of a question's terms.

bm25s keeps, per term, the BM25 share of every paragraph holding it (a CSC matrix: `indptr`, `indices` sorted by
paragraph, `data`). A question is scored once, into an array as long as the index (8 bytes a paragraph: 42 MB at
5.2 M), by adding its terms' postings; its best k come from one partition of that array, and the second hop (the
question plus a title) looks the question's scores up for the title's postings. Measured at 10^6 synthetic
paragraphs (docs/index.md), this costs a fraction of finding the best k from the postings alone (MaxScore), whose
bounds stay loose for questions of 12 to 16 terms. Scores equal bm25s's bit for bit: each paragraph's shares are
added in float32 in the question's term order, as bm25s adds them; scores of chosen rows (binary search in the
postings) equal the same rows of the full array. The table itself is built from arrays of token ids
(`bm25_table`), bit for bit bm25s's own.

A query is a list of parts whose scores add (the question; the question and a paragraph's title); a part is its
distinct terms grouped by how often the text repeats them, [(count, term ids)], each group scored once and
weighted by its count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_QUERY_TERMS = 256  # distinct terms of a query scored at most: bounds the work a question can ask for

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

    def __init__(self, model):
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

    @classmethod
    def load(cls, folder: Path) -> "Lexical":
        import bm25s

        return cls(bm25s.BM25.load(str(folder)))

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.indices.nbytes + self.indptr.nbytes)

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

    def top_with(self, base: np.ndarray, best: np.ndarray, extra: Part, k: int) -> np.ndarray:
        """The `k` best rows for a query of two parts, given `base`, every paragraph's score for the first (the
        question), `best`, at least its k best rows (`top`), and `extra` (a title): the same rows as
        `top(scores([base_part, extra]), k)`. A paragraph outside `extra`'s postings scores its base score alone, so
        only the base's best k and those postings compete."""
        held = [(count, [self._postings(term) for term in terms.tolist()]) for count, terms in extra]
        rows = np.concatenate([best[:k].astype(self.indices.dtype), *(r for _, group in held for r, _ in group)])
        rows.sort()
        rows = rows[np.concatenate([[True], rows[1:] != rows[:-1]])]  # distinct: a sort, cheaper than a hash here
        # `scores([extra], rows)` without its checks: every row of a posting is in `rows`, so one search of the
        # posting into `rows` places it
        extra_scores = np.zeros(len(rows), dtype=np.float64)
        for count, group in held:
            shares = np.zeros(len(rows), dtype=np.float32)  # as `scores`: float32, in term order
            for held_rows, data in group:
                shares[np.searchsorted(rows, held_rows)] += data
            extra_scores += shares if count == 1 else count * shares
        scores = base[rows] + extra_scores  # as `scores` adds a query's parts
        return rows[self.top(scores, k)[0]]  # rows ascending: ties by place are ties by row
