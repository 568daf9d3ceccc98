"""A served reader on a free loopback port, started and stopped by the test, and plain-HTTP helpers."""
from __future__ import annotations

import threading
import time

import pytest

from latentqa.serving.client import http_json


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

    def request(self, method: str, path: str, body=None, **options):
        return http_json(self.port, method, path, body, **options)


def as_query(example, shape: str = "pairs") -> dict:
    paragraphs = [[p.title, list(p.sentences)] for p in example.paragraphs] if shape == "pairs" else \
        [{"title": p.title, "sentences": list(p.sentences)} for p in example.paragraphs]
    return {"id": example.id, "question": example.question, "paragraphs": paragraphs}


@pytest.fixture(scope="session")
def served_reader_dir(trained_latent_run):
    return trained_latent_run / "best"
