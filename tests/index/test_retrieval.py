"""Retrieval over an index (`index/retrieval.py`): two hops reach a paragraph the question does not name, past
the threshold the vectors are held compressed and candidates rescored exactly, an index grown in two runs retrieves
what one built at once does."""
import numpy as np

import latentqa
from latentqa.index.build import build_index
from latentqa.index.retrieval import both_gold_recall
from latentqa.index.store import IndexStore


def test_two_hop_reaches_a_paragraph_the_question_does_not_name(built, index_reader_dir, sample_examples):
    indexed = latentqa.load_reader(index_reader_dir, cache_mb=0, index=built[0])
    retriever, store = indexed.retriever, indexed.retriever.store
    titles = {p.title for p in store.paragraphs}
    examples = [ex for ex in sample_examples if {t for t, _ in ex.supporting_facts} <= titles]
    assert len(examples) >= 8
    gold = [{t for t, _ in ex.supporting_facts} for ex in examples]
    ranked = {}
    for method in ("bm25", "dense", "fused", "two-hop"):
        retriever.config = type(retriever.config)(method=method)
        ranked[method] = [[h.title for h in indexed.retrieve(ex.question, 10)] for ex in examples]
        assert all(len(r) == len(set(r)) == 10 for r in ranked[method])
    recall = {m: both_gold_recall(r, gold) for m, r in ranked.items()}
    assert recall["two-hop"][10] > recall["bm25"][10] and recall["two-hop"][10] > 0.5, recall
    # a link is a title the text names: each gold pair of a bridge question is linked one way or the other
    row = store.rows
    linked = [row[b] in retriever.links(row[a]) or row[a] in retriever.links(row[b])
              for ex, g in zip(examples, gold) if ex.type == "bridge" and len(g) == 2 for a, b in [sorted(g)]]
    assert sum(linked) >= 0.6 * len(linked) > 0


def test_past_the_threshold_retrieval_holds_compressed_vectors_and_rescores_exactly(built, index_reader_dir, corpus,
                                                                                    sample_examples, tmp_path):
    import shutil

    from latentqa.index.retrieval import VECTORS_FILE, retrieval_files

    shutil.copytree(built[0], tmp_path / "index")
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    assert build_index(reader, corpus, tmp_path / "index", reader_name="r", compress_above=100,
                       progress=False).added == 0  # only retrieval is built again
    store = IndexStore(tmp_path / "index")
    assert store.num_windows > 100 and (retrieval_files(store) / VECTORS_FILE).is_file()
    exact = latentqa.load_reader(index_reader_dir, cache_mb=0, index=built[0]).retriever
    compressed = latentqa.load_reader(index_reader_dir, cache_mb=0, index=tmp_path / "index").retriever
    assert compressed.vectors is None and compressed.vector_index.ntotal == store.num_windows
    assert compressed.memory()["vectors"] < exact.memory()["vectors"]  # codes, lists and codebooks vs fp32
    same = 0
    pipeline = latentqa.load_reader(index_reader_dir, cache_mb=0, index=built[0])
    for example in sample_examples[:12]:
        vector = pipeline.question_vector(example.question)
        dense_exact, dense_compressed = exact.dense_scores(vector), compressed.dense_scores(vector)
        bounds = store.paragraph_windows
        for row, score in dense_compressed.items():  # each an exact cosine of one of the paragraph's windows
            cosines = exact.window_vectors(np.arange(bounds[row], bounds[row + 1])) @ vector
            assert np.isclose(cosines, score, atol=1e-5).any() and score <= dense_exact.get(row, 1.0) + 1e-5
        want, got = exact.search(example.question, vector, 5), compressed.search(example.question, vector, 5)
        same += [h.title for h in want] == [h.title for h in got]
    assert same >= 10
    build_index(reader, corpus, tmp_path / "index", reader_name="r", progress=False)  # below the default: exact again
    assert not (retrieval_files(IndexStore(tmp_path / "index")) / VECTORS_FILE).exists()


def test_an_index_grown_in_two_runs_retrieves_what_one_built_at_once_does(built, index_reader_dir, corpus,
                                                                          sample_examples, tmp_path, monkeypatch):
    import bm25s

    from latentqa.index.lexical import Lexical, stemmer
    from latentqa.index.retrieval import Retriever, build_retrieval

    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    real, tokenized = bm25s.tokenize, []
    monkeypatch.setattr(bm25s, "tokenize", lambda texts, **kw: (tokenized.append(len(texts)), real(texts, **kw))[1])
    build_index(reader, corpus[:80], tmp_path / "index", reader_name="r", shard_paragraphs=40, states="fp16",
                progress=False)
    assert tokenized == [40, 40]
    tokenized.clear()
    build_index(reader, corpus, tmp_path / "index", reader_name="r", shard_paragraphs=40, progress=False)
    paragraphs_tokenized = [n for n in tokenized if n > 1]  # the rest: new titles, looked up in BM25's postings
    assert paragraphs_tokenized == [40]  # only the new shard: the others' tokens are kept in retrieval/terms
    monkeypatch.undo()
    pipeline = latentqa.load_reader(index_reader_dir, cache_mb=0, index=built[0])
    once = pipeline.retriever

    def assert_retrieves_as_once(grown):
        assert grown.store.paragraphs == once.store.paragraphs
        for example in sample_examples[:12]:
            vector = pipeline.question_vector(example.question)
            assert np.array_equal(grown.lexical_scores(example.question), once.lexical_scores(example.question))
            assert grown.search(example.question, vector, 10) == once.search(example.question, vector, 10)

    store = IndexStore(tmp_path / "index")
    assert_retrieves_as_once(Retriever(store))
    direct = Retriever(store)  # BM25 over the whole corpus tokenized at once, as bm25s is used alone
    alone = bm25s.BM25()
    alone.index(bm25s.tokenize([f"{p.title}. {' '.join(p.sentences)}" for p in corpus], stopwords="en",
                               stemmer=stemmer(), show_progress=False), show_progress=False)
    direct.lexical = Lexical(alone)
    for example in sample_examples[:12]:
        assert np.array_equal(direct.lexical_scores(example.question), once.lexical_scores(example.question))
    terms = sorted((tmp_path / "index" / "retrieval" / "terms").iterdir())
    assert len(terms) == 3
    terms[0].write_bytes(b"not safetensors")  # a damaged terms file is tokenized again
    build_retrieval(store)
    assert_retrieves_as_once(Retriever(store))
    assert len(list((tmp_path / "index" / "retrieval" / "terms").iterdir())) == 3



def test_vector_lists_are_at_most_one_per_39_training_windows(built, monkeypatch):
    from latentqa.index import retrieval

    store = IndexStore(built[0])
    monkeypatch.setattr(retrieval, "TRAINING_VECTORS", 300)  # PQ codebooks need 256
    index = retrieval.compressed_vectors(store)
    assert store.num_windows >= 39 * 8  # by its windows alone, 8 lists or more
    assert index.nlist == 300 // 39 and index.ntotal == store.num_windows
