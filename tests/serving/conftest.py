"""A served reader on a free loopback port, started and stopped by the test, and plain-HTTP helpers."""
from __future__ import annotations

import http.client
import json
import threading
import time

import pytest


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1, port chosen by the OS, in a thread of the test process."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def request(self, method: str, path: str, body=None, raw: bytes | None = None, headers=None):
        return request(self.port, method, path, body, raw, headers)


def request(port: int, method: str, path: str, body=None, raw: bytes | None = None, headers=None,
            timeout: float = 120):
    """(status, parsed JSON body) of one HTTP request to 127.0.0.1:port."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, json.loads(payload) if payload else None


def as_query(example, shape: str = "pairs") -> dict:
    paragraphs = [[p.title, list(p.sentences)] for p in example.paragraphs] if shape == "pairs" else \
        [{"title": p.title, "sentences": list(p.sentences)} for p in example.paragraphs]
    return {"id": example.id, "question": example.question, "paragraphs": paragraphs}


@pytest.fixture(scope="session")
def served_reader_dir(trained_latent_run):
    return trained_latent_run / "best"
