"""The index end to end (`latentqa index`, `ask`, `predict`, `serve`, `bench-index`) on the shipped sample with a
tiny reader: an answer from the index equals the answer given the same paragraphs, and every command reads it."""
import json

import numpy as np
import pytest

import latentqa
from latentqa.cli import main
from latentqa.data.corpus import load_corpus
from latentqa.serving.queries import RequestError


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



@pytest.mark.parametrize("option,message", [
    (["--states", "int4-pca7"], "states format 'int4-pca7': int4 stores two directions a byte, so D must be even"),
    (["--states", "int8-pca65"], "states format int8-pca65: 65 directions of states 64 wide"),
    (["--states", "int9"], "states format 'int9' is not one latentqa reads"),
    (["--shard-paragraphs", "0"], "--shard-paragraphs must be at least 1, got 0"),
])
def test_cli_index_refuses_a_bad_option_in_one_line_before_writing(index_reader_dir, sample_path, tmp_path, capsys,
                                                                   option, message):
    assert main(["index", "--model", str(index_reader_dir), "--data", str(sample_path), "--out",
                 str(tmp_path / "i"), *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"latentqa: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "i").exists()
