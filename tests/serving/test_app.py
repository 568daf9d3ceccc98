"""The server (`serving/app.py`), over real HTTP on loopback against a tiny served reader: answers equal `latentqa
predict`'s, concurrent requests each get their own, bad input gets a 4xx naming the field, the cache changes nothing
but speed, a query that fails inside the model fails alone, and SIGTERM lets the requests in flight finish."""
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import latentqa
from latentqa.serving.app import create_app
from latentqa.serving.batching import Batching
from latentqa.serving.client import LocalServer
from latentqa.serving.queries import Limits

from tests.conftest import tiny_reader

from .conftest import ServerThread, as_query


@pytest.fixture(scope="module")
def expected(served_reader_dir, sample_examples):
    """The Python API's answers (equal to `latentqa predict`'s: test_pipeline.py), one query at a time."""
    reader = latentqa.load_reader(served_reader_dir, cache_mb=0)
    return {ex.id: reader.answer_batch([as_query(ex)], max_new_tokens=8)[0] for ex in sample_examples[:24]}


@pytest.fixture(scope="module")
def server(served_reader_dir):
    pipeline = latentqa.load_reader(served_reader_dir, cache_mb=64,
                                    limits=Limits(max_paragraphs=12, max_context_tokens=5000, max_queries=20,
                                                  max_body_mb=200_000 / 2**20))
    with ServerThread(create_app(pipeline, batching=Batching(max_batch_size=8, max_wait_ms=100), generation=pipeline.generation(max_new_tokens=8))) as running:
        yield running


def same(reply: dict, answer) -> bool:
    scores = [(s["title"], s["sent_id"]) for s in reply["sentence_scores"]]
    return (reply["id"], reply["answer"], [tuple(f) for f in reply["supporting_facts"]]) == \
        (answer.id, answer.answer, answer.supporting_facts) and scores == [(t, i) for t, i, _ in answer.sentence_scores] \
        and all(abs(s["score"] - x[2]) < 1e-3 for s, x in zip(reply["sentence_scores"], answer.sentence_scores))


def test_health_info_and_docs(server):
    assert server.request("GET", "/health") == (200, {"status": "ok"})
    status, info = server.request("GET", "/v1/info")
    assert status == 200 and info["kind"] == "latent" and info["device"] == "cpu"
    assert info["batching"] == {"max_batch_size": 8, "max_wait_ms": 100, "max_pending": 256, "pending": 0}
    assert info["state_cache"]["enabled"] and info["state_cache"]["max_mb"] == 64
    assert {"requests", "batches", "mean_batch_size"} <= set(info["counters"])
    status, spec = server.request("GET", "/openapi.json")
    assert status == 200 and "/v1/answer" in spec["paths"]


def test_single_and_list_requests_answer_as_predict(server, sample_examples, expected):
    status, reply = server.request("POST", "/v1/answer", as_query(sample_examples[0], shape="objects"))
    assert status == 200 and same(reply, expected[sample_examples[0].id])
    assert reply["timing_ms"]["total"] >= reply["timing_ms"]["model"] > 0
    batch = [as_query(ex) for ex in sample_examples[1:6]]
    status, replies = server.request("POST", "/v1/answer", batch)
    assert status == 200 and [r["id"] for r in replies] == [q["id"] for q in batch]
    assert all(same(r, expected[r["id"]]) for r in replies)
    assert {r["batch_size"] for r in replies} == {5}  # one list, one batch


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, sample_examples, expected):
    before = server.request("GET", "/v1/info")[1]["counters"]
    examples = sample_examples[:24]
    with ThreadPoolExecutor(max_workers=24) as pool:
        replies = list(pool.map(lambda ex: server.request("POST", "/v1/answer", as_query(ex)), examples))
    assert [status for status, _ in replies] == [200] * 24
    for ex, (_, reply) in zip(examples, replies):
        assert same(reply, expected[ex.id])  # its own scores, over its own sentences
    after = server.request("GET", "/v1/info")[1]["counters"]
    batches = after["batches"] - before["batches"]
    assert after["requests"] - before["requests"] == 24 and batches < 24  # batches formed
    assert max(reply["batch_size"] for _, reply in replies) > 1


def test_the_cache_serves_repeated_paragraphs(server, sample_examples, expected):
    query = as_query(sample_examples[7])
    server.request("POST", "/v1/answer", query)
    hits = server.request("GET", "/v1/info")[1]["state_cache"]["hits"]
    status, reply = server.request("POST", "/v1/answer", {**query, "question": sample_examples[7].question})
    assert status == 200 and same(reply, expected[sample_examples[7].id])
    assert server.request("GET", "/v1/info")[1]["state_cache"]["hits"] > hits


GOOD = {"question": "Who?", "paragraphs": [["A", ["Alice went home."]]]}


@pytest.mark.parametrize("body, status, field", [
    ({"paragraphs": GOOD["paragraphs"]}, 422, "question"),
    ({"question": "Who?", "paragraphs": {"A": "x"}}, 422, "paragraphs"),
    ({"question": "Who?", "paragraphs": [["A", ["fine", 3]]]}, 422, "paragraphs[0][1][1]"),
    ({"question": "Who?", "paragraphs": [{"title": "A", "sentences": [" "]}]}, 422, "paragraphs"),
    ({"question": "Who?", "paragraphs": [["A", ["x"]]] * 13}, 422, "paragraphs"),  # limit 12
    ({"question": "Who?", "paragraphs": [["A", ["word " * 2000]]] * 3}, 422, "paragraphs"),  # over 5,000 tokens
    ([GOOD, {"question": "Who?"}], 422, "[1].paragraphs"),
    ([GOOD] * 21, 413, "body"),  # limit 20 queries
    ([], 422, "body"),
    ("just a string", 422, "body"),
    ({**GOOD, "extra": 1}, 422, "extra"),
    ({**GOOD, "latents": 2}, 422, "latents"),  # trained for 4 only
    ([GOOD, {**GOOD, "latents": "2"}], 422, "[1].latents"),
])
def test_bad_input_gets_a_4xx_naming_the_field(server, body, status, field):
    got, reply = server.request("POST", "/v1/answer", body)
    assert (got, reply["error"]["field"]) == (status, field), reply
    assert reply["error"]["message"]


def test_one_batch_mixing_latent_counts_gives_each_query_its_answer_alone(tiny_models, sample_examples, tmp_path):
    folder = tiny_reader(tiny_models, nested_latents=(2, 4, 8), gate_init=1.0).save_pretrained(tmp_path / "nested")
    alone = latentqa.load_reader(folder, cache_mb=0)
    queries = [{**as_query(ex), "latents": k} for ex, k in zip(sample_examples[:3], (2, 8, 4))]
    queries += [as_query(sample_examples[0]), {**as_query(sample_examples[0]), "latents": 8}]
    expected = [alone.answer_batch([{k: v for k, v in q.items() if k != "latents"}], max_new_tokens=8,
                                   latents=q.get("latents", 2))[0] for q in queries]
    pipeline = latentqa.load_reader(folder, cache_mb=0)
    app = create_app(pipeline, batching=Batching(max_batch_size=8, max_wait_ms=100),
                     generation=pipeline.generation(max_new_tokens=8, latents=2))  # the server's default: 2
    with ServerThread(app) as running:
        status, replies = running.request("POST", "/v1/answer", queries)
        assert running.request("GET", "/v1/info")[1]["generation"]["latents"] == 2
    assert status == 200 and {reply["batch_size"] for reply in replies} == {5}  # one batch
    assert all(same(reply, answer) for reply, answer in zip(replies, expected))
    assert replies[0]["sentence_scores"] != replies[4]["sentence_scores"]  # the count is read: 2 and 8 latents


def test_bodies_that_are_not_json_too_large_or_sent_elsewhere(server):
    got, reply = server.request("POST", "/v1/answer", raw=b"{not json")
    assert got == 400 and reply["error"]["field"] == "body" and "not JSON" in reply["error"]["message"]
    got, reply = server.request("POST", "/v1/answer", raw=b"x" * 200_001)
    assert got == 413 and "over the limit of 200000" in reply["error"]["message"]
    assert server.request("GET", "/v1/answer")[0] == 405
    got, reply = server.request("GET", "/nowhere")
    assert got == 404 and reply["error"]["message"]
    assert server.request("GET", "/health") == (200, {"status": "ok"})  # still serving


def test_a_query_that_fails_in_the_model_fails_alone(served_reader_dir, sample_examples, expected):
    pipeline = latentqa.load_reader(served_reader_dir, cache_mb=0)
    run = pipeline.run

    def run_unless_asked_to_fail(prepared, config, rule):
        if any(p.example.question == "fail inside" for p in prepared):
            raise RuntimeError("the model broke")
        return run(prepared, config, rule)

    pipeline.run = run_unless_asked_to_fail
    queries = [as_query(ex) for ex in sample_examples[:3]]
    queries.insert(1, {"question": "fail inside", "paragraphs": GOOD["paragraphs"]})
    with ServerThread(create_app(pipeline, batching=Batching(max_batch_size=4, max_wait_ms=2000), generation=pipeline.generation(max_new_tokens=8))) as running:
        with ThreadPoolExecutor(max_workers=4) as pool:
            replies = list(pool.map(lambda q: running.request("POST", "/v1/answer", q), queries))
        counters = running.request("GET", "/v1/info")[1]["counters"]
    assert [status for status, _ in replies] == [200, 500, 200, 200]
    assert "the model broke" in replies[1][1]["error"]["message"]
    assert all(same(reply, expected[reply["id"]]) for status, reply in replies if status == 200)
    assert counters["failures"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_latentqa_serve_finishes_requests_in_flight_on_shutdown(served_reader_dir, sample_examples, expected, stop):
    ex, replies = sample_examples[2], []
    with LocalServer(served_reader_dir, "--max-wait-ms", "1500", "--max-new-tokens", "8") as server:
        sender = threading.Thread(target=lambda: replies.append(server.request("POST", "/v1/answer", as_query(ex))))
        sender.start()
        time.sleep(0.5)  # the request waits in its batch (1.5 s window)
        server.process.send_signal(stop)
        sender.join(timeout=60)
        assert replies and replies[0][0] == 200 and same(replies[0][1], expected[ex.id]), server.output()[-2000:]
        # uvicorn re-raises the signal once it has shut down (default action: SIGTERM ends the process with it)
        assert server.process.wait(timeout=60) in (0, -stop)
        with pytest.raises(OSError):
            server.request("GET", "/health", timeout=2)


def test_serve_refuses_a_missing_reader_and_bad_settings_in_one_line(tmp_path, capsys, tiny_baseline):
    from latentqa.cli import main

    assert main(["serve", "--model", str(tmp_path / "nothing")]) == 2
    assert "not a reader folder" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--max-batch-size", "0"]) == 2
    assert "--max-batch-size must be at least 1" in capsys.readouterr().err
    assert main(["serve", "--model", "someone/not-cached"]) == 2  # offline in the tests: fails at once
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err
    folder = tiny_baseline.save_pretrained(tmp_path / "baseline")
    assert main(["serve", "--model", str(folder), "--window-packing", "paragraph"]) == 2
    assert "baseline reader has no encoder windows" in capsys.readouterr().err
