"""The server under hostile input and overload, over loopback: every reply JSON, a 4xx for the client's faults, a
503 with Retry-After when its queue is full, a 500 with a request id only for its own; healthy after."""
import http.client
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import latentqa
from latentqa.serving.app import create_app
from latentqa.serving.batching import Batching
from tests.serving.conftest import ServerThread, as_query

GOOD = {"id": "good", "question": "Who wrote it?", "paragraphs": [["A", ["Ann wrote it."]]]}


@pytest.fixture(scope="module")
def pipeline(trained_latent_run):
    return latentqa.load_reader(trained_latent_run / "best", cache_mb=0)


def _post(port, raw: bytes, content_type="application/json"):
    """(status, headers, parsed JSON) of a POST /v1/answer; fails if the reply is not JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/v1/answer", body=raw, headers={"Content-Type": content_type} if content_type
                           else {})
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, json.loads(response.read())
    finally:
        connection.close()


SURROGATE = "\\ud800"  # as JSON text: decodes to a lone surrogate
HOSTILE = [
    ("[" * 100_000 + "]" * 100_000, 400, "body"),  # Python's JSON parser recurses
    (json.dumps({**GOOD, "question": "x"}).replace('"x"', f'"Who {SURROGATE}?"'), 422, "question"),
    (json.dumps(GOOD).replace('"A"', f'"A{SURROGATE}"'), 422, "paragraphs[0][0]"),
    (json.dumps(GOOD).replace('"Ann wrote it."', f'"Ann {SURROGATE}"'), 422, "paragraphs[0][1][0]"),
    (json.dumps(GOOD).replace('"good"', f'"{SURROGATE}"'), 422, "id"),
    (json.dumps([GOOD, {**GOOD, "id": "x"}]).replace('"x"', f'"{SURROGATE}"'), 422, "[1].id"),
]


def test_hostile_bodies_get_a_json_4xx_naming_the_field(pipeline):
    with ServerThread(create_app(pipeline, generation=pipeline.generation(max_new_tokens=4))) as running:
        for raw, status, field in HOSTILE:
            got, _, reply = _post(running.port, raw.encode())
            assert (got, reply["error"]["field"]) == (status, field), (raw[:80], reply)
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            got, _, reply = _post(running.port, json.dumps(GOOD).encode(), content_type)
            assert got == 415 and reply["error"]["field"] == "content-type", reply
        got, _, reply = _post(running.port, json.dumps(GOOD).encode(), "application/json; charset=utf-8")
        assert got == 200 and reply["id"] == "good"
        assert running.request("GET", "/health") == (200, {"status": "ok"})


def test_a_full_queue_answers_503_with_retry_after_and_never_mixes_answers(pipeline, sample_examples):
    run = pipeline.run

    def slow(prepared, config, rule):
        time.sleep(0.3)
        return run(prepared, config, rule)

    queries = [as_query(ex) for ex in sample_examples[:3]] * 4
    with ServerThread(create_app(pipeline, batching=Batching(max_batch_size=1, max_wait_ms=0, max_pending=2),
                                 generation=pipeline.generation(max_new_tokens=4))) as running:
        pipeline.run = slow
        try:
            with ThreadPoolExecutor(max_workers=12) as pool:
                replies = list(pool.map(lambda q: _post(running.port, json.dumps(q).encode()), queries))
        finally:
            pipeline.run = run
        assert running.request("GET", "/health") == (200, {"status": "ok"})
        statuses = [status for status, _, _ in replies]
        assert set(statuses) == {200, 503}, statuses
        for (status, headers, reply), query in zip(replies, queries):
            if status == 503:
                assert headers["retry-after"] == "1" and "busy" in reply["error"]["message"]
            else:
                assert reply["id"] == query["id"]  # each caller gets its own question's answer
        alone = running.request("POST", "/v1/answer", queries[0])  # the queue has drained: answered again
        assert alone[0] == 200 and alone[1]["id"] == queries[0]["id"]


def test_tokenizing_leaves_the_event_loop_free(pipeline):
    prepare, entered, release = pipeline.prepare, threading.Event(), threading.Event()

    def held(query, field=""):
        entered.set()
        assert release.wait(30)
        return prepare(query, field)

    with ServerThread(create_app(pipeline, generation=pipeline.generation(max_new_tokens=4))) as running:
        pipeline.prepare = held
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                answer = pool.submit(running.request, "POST", "/v1/answer", GOOD)
                assert entered.wait(30)
                assert running.request("GET", "/health", timeout=5) == (200, {"status": "ok"})  # while tokenizing
                release.set()
                assert answer.result()[0] == 200
        finally:
            pipeline.prepare = prepare


def test_a_fault_of_the_server_is_a_json_500_with_a_logged_request_id(pipeline, caplog):
    info = pipeline.info
    with ServerThread(create_app(pipeline)) as running:
        pipeline.info = lambda: 1 / 0
        try:
            with caplog.at_level(logging.ERROR, logger="latentqa.serving.app"):
                status, reply = running.request("GET", "/v1/info")
        finally:
            pipeline.info = info
        assert status == 500 and "ZeroDivisionError" in reply["error"]["message"]
        assert f"request {reply['error']['request_id']}" in caplog.text
        assert running.request("GET", "/health") == (200, {"status": "ok"})
