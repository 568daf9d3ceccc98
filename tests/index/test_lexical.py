"""BM25 from postings (`index/lexical.py`): every score equals bm25s's own, bit for bit, and the best k (of the
question, and of the question with a title) equal a stable sort of every paragraph's score."""
import bm25s
import numpy as np
import pytest

from latentqa.benchmark.scale import SyntheticCorpus
from latentqa.index.lexical import Lexical, Tokens, bm25, stemmer


@pytest.fixture(scope="module")
def lexical():
    corpus = SyntheticCorpus()
    paragraphs = [corpus.paragraph(i) for i in range(1500)]
    model = bm25s.BM25()
    model.index(bm25s.tokenize([f"{p.title}. {' '.join(p.sentences)}" for p in paragraphs], stopwords="en",
                               stemmer=stemmer(), show_progress=False), show_progress=False)
    return Lexical(model), paragraphs


def queries(paragraphs):
    rng = np.random.default_rng(0)
    for row in rng.integers(len(paragraphs), size=40):
        words = " ".join(paragraphs[row].sentences).split()
        yield " ".join(rng.choice(words, size=min(12, len(words)), replace=False)), paragraphs[row + 1].title
    yield "the of and", "Is it?"  # stopwords only: no term
    yield "word " * 300 + paragraphs[3].title, paragraphs[3].title  # a term repeated: weighted by its count


def test_scores_equal_bm25s_bit_for_bit(lexical):
    index, paragraphs = lexical
    for question, _ in queries(paragraphs):
        part = index.part(question)
        expected = np.zeros(index.num_docs)
        for count, terms in part:
            if len(terms):
                expected += count * index.model.get_scores_from_ids(terms.tolist())
        assert np.array_equal(index.scores([part]), expected)
        rows = np.unique(np.random.default_rng(1).integers(index.num_docs, size=200))
        assert np.array_equal(index.scores([part], rows), expected[rows])


@pytest.mark.parametrize("k", [1, 6, 11, 200])
def test_the_best_k_equal_a_stable_sort_of_every_score(lexical, k):
    index, paragraphs = lexical
    for question, title in queries(paragraphs):
        for parts in ([index.part(question)], [index.part(question), index.part(title)], [index.part(title)]):
            every = index.scores(parts)
            rows, scores = index.top(every, k)
            expected = np.argsort(-every, kind="stable")[:k]
            assert rows.tolist() == expected.tolist()
            assert np.array_equal(scores, every[expected])
        base, extra = index.part(question), index.part(title)
        for prefix in (k, k + 7):  # any prefix of at least k of the question's own ranking
            scores = index.scores([base])
            with_title = index.top_with(scores, index.top(scores, prefix)[0], extra, k)
            assert with_title.tolist() == index.top(index.scores([base, extra]), k)[0].tolist()


def test_ties_at_the_kth_score_go_to_the_lower_rows():
    scores = np.array([1.0, 3.0, 0.0, 3.0, 3.0, 0.0, 2.0])
    assert Lexical.top(scores, 2)[0].tolist() == [1, 3]
    assert Lexical.top(scores, 5)[0].tolist() == [1, 3, 4, 6, 0]
    assert Lexical.top(scores, 6)[0].tolist() == [1, 3, 4, 6, 0, 2]  # no term held: filled by row, at 0
    assert Lexical.top(scores, 9)[0].tolist() == [1, 3, 4, 6, 0, 2, 5]
    assert Lexical.top(np.zeros(0), 3)[0].tolist() == []


def test_postings_out_of_row_order_are_refused(lexical):
    index, _ = lexical
    term = int(np.argmax(np.diff(index.indptr)))  # the longest postings
    model = index.model
    scores = dict(model.scores)
    indices = scores["indices"].copy()
    start = index.indptr[term]
    indices[start], indices[start + 1] = indices[start + 1], indices[start]
    model.scores = {**scores, "indices": indices}
    try:
        with pytest.raises(ValueError, match="row order"):
            Lexical(model)
    finally:
        model.scores = scores


def test_parts_of_several_texts_equal_each_text_alone(lexical):
    index, paragraphs = lexical
    texts = [p.title for p in paragraphs[:20]] + ["", "the of and", "word " * 5 + "other word"]
    for together, text in zip(index.parts(texts), texts):
        alone = index.part(text)
        assert [(count, terms.tolist()) for count, terms in together] == [(c, t.tolist()) for c, t in alone]


def test_the_table_built_from_arrays_is_bm25s_own_bit_for_bit(lexical):
    _, paragraphs = lexical
    tokenized = bm25s.tokenize([f"{p.title}. {' '.join(p.sentences)}" for p in paragraphs], stopwords="en",
                               stemmer=stemmer(), show_progress=False)
    tokenized.ids[7] = []  # a paragraph with no indexed term
    vocab = dict(tokenized.vocab)  # before bm25s adds its empty token to it
    own = bm25s.BM25()
    own.index(tokenized, show_progress=False)
    ids = np.asarray([i for doc in tokenized.ids for i in doc], dtype=np.int64)
    starts = np.cumsum([0] + [len(doc) for doc in tokenized.ids])
    built = bm25()
    built.index(Tokens(ids=(ids, starts), vocab=dict(vocab)), show_progress=False)
    for name in ("data", "indices", "indptr"):
        assert built.scores[name].dtype == own.scores[name].dtype, name
        assert np.array_equal(built.scores[name], own.scores[name]), name
    assert built.scores["num_docs"] == own.scores["num_docs"] and built.vocab_dict == own.vocab_dict
    other = bm25()
    other.method = "bm25+"
    with pytest.raises(ValueError, match="Lucene's BM25, not 'bm25\\+'"):
        other.index(Tokens(ids=(ids, starts), vocab=dict(vocab)), show_progress=False)
