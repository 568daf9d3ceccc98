"""BM25 over an index's paragraphs, scored from the postings of a question's terms: a question costs what its
rarest terms' postings hold, not what the index holds.

bm25s keeps, per term, the BM25 share of every paragraph holding it (a CSC matrix: `indptr`, `indices` sorted by
paragraph, `data`); it scores a question by adding those shares into an array as long as the index. Here the best
k paragraphs are found exactly without that array (MaxScore): terms are taken by their largest share, most
telling first, and the paragraphs their postings hold are scored in full (the other terms' shares looked up by
binary search); once the k-th best of them scores more than every term left could add, no other paragraph can
enter. Scores equal bm25s's bit for bit: each paragraph's shares are added in float32 in the question's term order,
as bm25s adds them.

A query is a list of parts whose scores add (the question; the question and a paragraph's title); a part is its
distinct terms grouped by how often the text repeats them, [(count, term ids)], each group scored once and
weighted by its count.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_QUERY_TERMS = 256  # distinct terms of a query scored at most: bounds the work a question can ask for
ROUNDING = 1e-5  # relative slack on the bound of the terms left, for float32 sums in another order

Part = list[tuple[int, np.ndarray]]


def stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


class Lexical:
    """A saved bm25s index, scored as the module docstring says."""

    def __init__(self, model):
        self.model = model
        scores = model.scores
        self.data, self.indices, self.indptr = scores["data"], scores["indices"], scores["indptr"]
        self.num_docs = int(scores["num_docs"])
        starts, lengths = self.indptr[:-1], np.diff(self.indptr)
        ascending = np.diff(self.indices.astype(np.int64)) > 0
        ascending[starts[(starts > 0) & (starts < len(self.indices))] - 1] = True  # where one term's postings end
        if not ascending.all():  # binary search needs each term's rows in order (scipy's CSC keeps them so)
            raise ValueError("BM25 postings out of row order")
        self.bound = np.zeros(len(lengths), dtype=np.float64)  # each term's largest share
        held = np.flatnonzero(lengths)
        self.bound[held] = np.maximum.reduceat(self.data, starts[held]) if len(held) else 0.0
        self.stemmer = stemmer()

    @classmethod
    def load(cls, folder: Path) -> "Lexical":
        import bm25s

        return cls(bm25s.BM25.load(str(folder)))

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.indices.nbytes + self.indptr.nbytes + self.bound.nbytes)

    def part(self, text: str) -> Part:
        """`text`'s indexed terms (English stopwords, Snowball stemmer), the first `MAX_QUERY_TERMS` distinct ones,
        grouped by count, fewest first: a question of 400 repeated words costs what one word costs."""
        import bm25s

        tokens = bm25s.tokenize([text], stopwords="en", stemmer=self.stemmer, show_progress=False,
                                return_ids=False)[0]
        ids = np.asarray(self.model.get_tokens_ids(tokens), dtype=np.int64)
        terms, first, counts = np.unique(ids, return_index=True, return_counts=True)
        keep = np.argsort(first, kind="stable")[:MAX_QUERY_TERMS]  # the query's first distinct terms
        terms, counts = terms[keep], counts[keep]
        return [(int(count), terms[counts == count]) for count in np.unique(counts)]

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
                scores += count * shares
            total = total + scores
        return total

    def top(self, parts: list[Part], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best paragraphs for the query and their scores, best first, ties by row (as a stable sort of
        every paragraph's score would give them); paragraphs holding no term fill the list by row, at 0.

        MaxScore: the terms most telling first, the paragraphs their postings hold are scored with those terms
        alone, and the k best of these in full, whose lowest score is a floor under the k-th best. Once the floor
        is above what every other term together could add, no paragraph outside these postings can enter, and
        of those inside only the ones whose partial score plus that bound reaches the floor are scored in full."""
        items = sorted(((count * self.bound[term], count, term) for part in parts for count, terms in part
                        for term in terms.tolist()), reverse=True)
        left = (np.cumsum([bound for bound, _, _ in items][::-1])[::-1] * (1 + ROUNDING)).tolist() + [0.0]
        rows = np.zeros(0, dtype=np.int64)
        for m in range(1, len(items) + 1):
            held = [self._postings(term) for _, _, term in items[:m]]
            rows, inverse = np.unique(np.concatenate([h for h, _ in held]), return_inverse=True)
            if len(rows) < k:
                continue
            partial = np.bincount(inverse, np.concatenate([count * d.astype(np.float64)
                                                           for (_, count, _), (_, d) in zip(items, held)]))
            probe = np.sort(rows[np.argpartition(-partial, k - 1)[:k]])
            floor = float(self.scores(parts, probe).min()) * (1 - ROUNDING)
            if floor > left[m]:
                rows = rows[partial + left[m] >= floor]
                break
        rows = rows.astype(np.int64)
        scores = self.scores(parts, rows)
        order = np.lexsort((rows, -scores))[:k]
        rows, scores = rows[order], scores[order]
        if len(rows) < k:  # every paragraph holding a term is in: the rest score 0
            rest = np.setdiff1d(np.arange(min(self.num_docs, k + len(rows))), rows)[:k - len(rows)]
            rows, scores = np.concatenate([rows, rest]), np.concatenate([scores, np.zeros(len(rest))])
        return rows, scores

    def top_with(self, base: Part, best: tuple[np.ndarray, np.ndarray], extra: Part, k: int) -> np.ndarray:
        """The `k` best rows for `base` and `extra` together, given `best`, a prefix of at least k of base's own
        ranking with its scores (`top`); the same rows as `top([base, extra], k)`. A paragraph outside that prefix
        scores at most what its last row scores for base, plus its own `extra` score, which is 0 outside `extra`'s
        postings: only the paragraphs of those postings that this bound puts at or above the k-th best of the
        prefix are scored for base."""
        rows, base_scores = best
        ranked = base_scores + self.scores([extra], rows)  # as `scores([base, extra])` adds its parts
        floor = float(np.partition(ranked, len(rows) - k)[len(rows) - k]) * (1 - ROUNDING)
        held = np.setdiff1d(np.concatenate([self.postings(term) for _, terms in extra for term in terms.tolist()]
                                           + [np.zeros(0, dtype=np.int64)]), rows).astype(np.int64)
        extra_scores = self.scores([extra], held)
        keep = float(base_scores[-1]) * (1 + ROUNDING) + extra_scores >= floor
        held = held[keep]
        rows = np.concatenate([rows, held])
        scores = np.concatenate([ranked, self.scores([base], held) + extra_scores[keep]])
        return rows[np.lexsort((rows, -scores))[:k]]
