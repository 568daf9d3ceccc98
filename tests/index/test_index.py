"""The index (`latentqa index`) on the shipped sample with a tiny reader: built in interrupted parts it equals one
built at once, a grown corpus adds only its new paragraphs, the stored states are the encoder's, an answer from the
index equals the answer given the same paragraphs, readers whose states are not the index's are refused."""
import json

import numpy as np
import pytest
import torch

import latentqa
from latentqa.cli import main
from latentqa.data.corpus import load_corpus
from latentqa.index import build as build_module
from latentqa.index.build import build_index, paragraph_windows
from latentqa.index.retrieval import both_gold_recall
from latentqa.index.store import IndexFolderError, IndexStore
from latentqa.serving.pipeline import ReaderPipeline
from latentqa.serving.queries import RequestError
from tests.conftest import tiny_reader


@pytest.fixture(scope="module")
def corpus(sample_path):
    return load_corpus(str(sample_path))[0][:120]


@pytest.fixture(scope="module")
def built(index_reader_dir, corpus, tmp_path_factory):
    """An index of the corpus built at once, 40 paragraphs a shard, in fp16: the states a reader's own fp16 cache
    holds, so that an answer from it can equal one from the paragraphs (the other formats: test_state_formats.py)."""
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    out = tmp_path_factory.mktemp("index") / "index"
    report = build_index(reader, corpus, out, reader_name=str(index_reader_dir), shard_paragraphs=40, states="fp16",
                         progress=False)
    return out, report


def stored(directory):
    store = IndexStore(directory)
    return store, {p.title: [s.clone() for s in store.paragraph_states(row)] for row, p in enumerate(store.paragraphs)}


def test_interrupted_build_resumes_to_the_same_index(built, index_reader_dir, corpus, tmp_path, monkeypatch):
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    real, calls = build_module.encode_shard, []

    def dies_on_the_third(*args):
        calls.append(len(args[1]))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(build_module, "encode_shard", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        build_index(reader, corpus, tmp_path / "index", reader_name="r", shard_paragraphs=40, states="fp16",
                    progress=False)
    assert len(IndexStore(tmp_path / "index")) == 80  # two shards kept, the third never written
    calls.clear()
    monkeypatch.setattr(build_module, "encode_shard", lambda *args: (calls.append(len(args[1])), real(*args))[1])
    report = build_index(reader, corpus, tmp_path / "index", reader_name="r", shard_paragraphs=40, states="fp16",
                         progress=False)
    assert calls == [40] and report.added == 40 and report.paragraphs == 120  # only what was missing

    (store_a, states_a), (store_b, states_b) = stored(built[0]), stored(tmp_path / "index")
    assert [p for p in store_a.paragraphs] == [p for p in store_b.paragraphs] == corpus
    assert all(len(states_a[t]) == len(states_b[t]) and all(torch.equal(x, y) for x, y in zip(states_a[t], states_b[t]))
               for t in states_a)
    assert np.array_equal(store_a.vectors(), store_b.vectors())


def test_a_grown_corpus_adds_only_its_new_paragraphs(index_reader_dir, corpus, tmp_path, monkeypatch):
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    first = build_index(reader, corpus[:50] + corpus[:10], tmp_path / "index", reader_name="r", shard_paragraphs=40,
                        progress=False)
    assert first.added == first.paragraphs == 50  # a title given twice is one paragraph
    real, encoded = build_module.encode_shard, []
    monkeypatch.setattr(build_module, "encode_shard",
                        lambda *args: (encoded.extend(p.title for p in args[1]), real(*args))[1])
    report = build_index(reader, corpus, tmp_path / "index", reader_name="r", shard_paragraphs=40, progress=False)
    assert encoded == [p.title for p in corpus[50:]] and report.added == 70
    store = IndexStore(tmp_path / "index")
    assert len(store) == 120 and len({p.title for p in store.paragraphs}) == 120
    assert build_index(reader, corpus, tmp_path / "index", reader_name="r", progress=False).added == 0


def test_stored_states_are_the_encoders_states_of_that_paragraph(built, index_reader_dir, corpus):
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    store = IndexStore(built[0])
    for row in (0, 57, 119):
        windows = paragraph_windows(reader, [store.paragraphs[row]])
        states = store.paragraph_states(row)
        assert len(states) == len(windows) == len(store.paragraphs[row].sentences)  # one window a sentence
        for (ids, _), saved in zip(windows, states):
            with torch.no_grad():
                live = reader.encoder(input_ids=torch.tensor([ids])).last_hidden_state[0]
            assert saved.dtype == torch.float32 and saved.shape == live.shape  # read back from fp16
            torch.testing.assert_close(saved.float(), live, atol=2e-3, rtol=2e-3)  # fp16 storage


def test_an_answer_from_the_index_equals_the_answer_given_its_paragraphs(built, index_reader_dir, sample_examples):
    indexed = latentqa.load_reader(index_reader_dir, cache_mb=0, index=built[0], top_k=6)
    given = latentqa.load_reader(index_reader_dir, cache_mb=64)  # fp16 states, as the index stores them
    for example in sample_examples[:4]:
        answer = indexed.answer(example.question, max_new_tokens=6)
        assert len(answer.retrieved) == 6
        scores = [hit.score for hit in answer.retrieved]
        assert len(set(hit.title for hit in answer.retrieved)) == 6
        paragraphs = [(hit.title, list(indexed.retriever.store.paragraphs[hit.row].sentences))
                      for hit in answer.retrieved]
        explicit = given.answer(example.question, paragraphs, max_new_tokens=6)
        assert (answer.answer, answer.supporting_facts) == (explicit.answer, explicit.supporting_facts)
        assert [(t, i) for t, i, _ in answer.sentence_scores] == [(t, i) for t, i, _ in explicit.sentence_scores]
        np.testing.assert_allclose([s for *_, s in answer.sentence_scores],
                                   [s for *_, s in explicit.sentence_scores], atol=1e-5)
        assert scores and all(np.isfinite(scores))
    stats = indexed.reader.state_cache.stats()
    assert stats["index_hits"] > 0 and stats["index_misses"] == 0  # no paragraph went through the encoder
    # a query that brings its paragraphs works as before; without an index it must bring them
    brought = indexed.answer(sample_examples[0].question, [(p.title, list(p.sentences))
                                                           for p in sample_examples[0].paragraphs], max_new_tokens=4)
    assert brought.retrieved is None
    with pytest.raises(RequestError, match="paragraphs: missing"):
        given.answer(sample_examples[0].question)


def test_readers_whose_states_are_not_the_index_s_are_refused(built, tiny_models):
    assert ReaderPipeline(tiny_reader(tiny_models, seed=1), index=built[0]).retriever is not None  # same encoder
    other = tiny_reader(tiny_models)
    with torch.no_grad():
        other.encoder.embeddings.word_embeddings.weight[5, 0] += 0.01  # one weight: another encoder
    cases = {"another encoder": other, "greedy": tiny_reader(tiny_models, window_packing="greedy"),
             "encoder mode": tiny_reader(tiny_models, question_conditioning="encoder")}
    messages = {}
    for name, reader in cases.items():
        with pytest.raises(IndexFolderError) as err:
            ReaderPipeline(reader, index=built[0])
        messages[name] = str(err.value)
        assert "\n" not in messages[name] and str(built[0]) in messages[name]
    assert "encoder_fingerprint" in messages["another encoder"]
    assert "greedy" in messages["greedy"] and "'encoder'" in messages["encoder mode"]
    with pytest.raises(IndexFolderError, match="greedy"):
        build_index(cases["greedy"], [], built[0].parent / "other", reader_name="r", progress=False)


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


def test_cli_index_ask_and_predict_from_the_index(index_reader_dir, sample_path, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    paragraphs = load_corpus(str(sample_path))[0][:60]
    corpus.write_text("".join(json.dumps({"title": p.title, "sentences": list(p.sentences)}) + "\n"
                              for p in paragraphs))
    assert main(["index", "--model", str(index_reader_dir), "--data", str(corpus), "--out", str(tmp_path / "i"),
                 "--shard-paragraphs", "25"]) == 0
    assert "60 paragraphs (60 added)" in capsys.readouterr().out
    assert main(["ask", "--index", str(tmp_path / "i"), "--json", "--top-k", "3", "--max-new-tokens", "4",
                 "Which team does the player play for?"]) == 0  # the reader recorded in the index
    reply = json.loads(capsys.readouterr().out)
    assert len(reply["retrieved"]) == 3 and {"answer", "supporting_facts"} <= set(reply)
    out = tmp_path / "pred.json"
    assert main(["predict", "--model", str(index_reader_dir), "--index", str(tmp_path / "i"), "--data", str(sample_path),
                 "--limit", "5", "--top-k", "4", "--max-new-tokens", "4", "--out", str(out)]) == 0
    predictions, retrieved = json.loads(out.read_text()), json.loads(out.with_suffix(".retrieved.json").read_text())
    assert len(predictions["answer"]) == len(predictions["sp"]) == len(retrieved) == 5
    titles = {p.title for p in paragraphs}
    assert all(len(hits) == 4 and {t for t, _ in hits} <= titles for hits in retrieved.values())
    assert all({t for t, _ in predictions["sp"][i]} <= {t for t, _ in retrieved[i]} for i in retrieved)


def test_serve_with_an_index_answers_a_question_only_query_over_http(built, index_reader_dir, sample_examples):
    from latentqa.serving.app import create_app

    from ..serving.conftest import ServerThread

    pipeline = latentqa.load_reader(index_reader_dir, cache_mb=16, index=built[0], top_k=5)
    expected = pipeline.answer(sample_examples[0].question, id="q", max_new_tokens=4)
    with ServerThread(create_app(pipeline, generation=pipeline.generation(max_new_tokens=4))) as server:
        status, reply = server.request("POST", "/v1/answer", {"id": "q", "question": sample_examples[0].question})
        assert status == 200, reply
        assert [(h["title"], h["score"]) for h in reply["retrieved"]] == \
            [(h.title, h.score) for h in expected.retrieved]
        assert (reply["answer"], [tuple(f) for f in reply["supporting_facts"]]) == \
            (expected.answer, expected.supporting_facts)
        status, reply = server.request("POST", "/v1/answer", {"question": ""})
        assert status == 422 and reply["error"]["field"] == "question"
        status, info = server.request("GET", "/v1/info")
        assert status == 200 and info["index"]["paragraphs"] == 120 and info["index"]["index_hits"] > 0


@pytest.mark.slow
def test_two_processes_build_the_index_one_process_builds(built, index_reader_dir, corpus, tmp_path):
    """torchrun --nproc_per_node 2 on CPU: each process encodes every other shard; the index equals the one built
    by one process (states to the CPU kernels' rounding: the processes run one thread each)."""
    import os
    import subprocess
    import sys

    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"title": p.title, "sentences": list(p.sentences)}) + "\n" for p in corpus))

    def torchrun(out, states):
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                 "--master_port", "29541", "-m", "latentqa.cli", "index", "--model",
                                 str(index_reader_dir), "--data", str(path), "--out", str(out), "--shard-paragraphs",
                                 "40", "--states", states],
                                capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-3000:]

    torchrun(tmp_path / "index", "fp16")
    (one, one_states), (two, two_states) = stored(built[0]), stored(tmp_path / "index")
    assert one.paragraphs == two.paragraphs and np.array_equal(one._sorted_keys, two._sorted_keys)
    for title, states in one_states.items():
        for a, b in zip(states, two_states[title], strict=True):
            torch.testing.assert_close(a.float(), b.float(), atol=2e-3, rtol=2e-3)
    # a projected format: the main process fits the projection on the first shard before any process encodes
    torchrun(tmp_path / "pca", "int8-pca16")
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    build_index(reader, corpus, tmp_path / "pca-one", reader_name="r", shard_paragraphs=40, states="int8-pca16",
                progress=False)
    (one, one_states), (two, two_states) = stored(tmp_path / "pca-one"), stored(tmp_path / "pca")
    torch.testing.assert_close(one.projection.directions.abs(), two.projection.directions.abs(), atol=1e-3, rtol=0)
    for title, states in one_states.items():
        for a, b in zip(states, two_states[title], strict=True):
            torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)
    assert len(list((tmp_path / "index" / "shards").iterdir())) == 3


def test_bench_index_prints_its_figures(built, sample_path, tmp_path, capsys):
    assert main(["bench-index", "--index", str(built[0]), "--data", str(sample_path), "--questions", "10",
                 "--repeats", "1", "--build-paragraphs", "20", "--max-new-tokens", "2",
                 "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "bench-index.json").read_text())
    assert set(results["recall_both_gold"]) == {"bm25", "dense", "fused", "two-hop"}
    assert results["build"]["paragraphs"] == 20 and 0 < results["build"]["encoder_share"] <= 1
    for batch in ("batch_1", "batch_8"):
        assert results["timing"][batch]["index_over_live"]["median"] > 0
    assert set(results["compressed_vectors"]["recall_both_gold"]) == {"dense", "two-hop"}
    assert "batch 8: from the index" in out and "two-hop" in out


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
