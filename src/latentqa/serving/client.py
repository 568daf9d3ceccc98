"""Talking to a server from Python: one JSON request over plain HTTP, and a `latentqa serve` process on a free
loopback port (what the load generator and the tests start and stop)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def http_json(port: int, method: str, path: str, body=None, *, raw: bytes | None = None, host: str = "127.0.0.1",
              timeout: float = 300, content_type: str | None = "application/json") -> tuple[int, object]:
    """(status, parsed JSON reply) of one request; `body` is sent as JSON, `raw` as given."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        connection.request(method, path, body=data, headers={"Content-Type": content_type} if content_type else {})
        response = connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """`latentqa serve --model MODEL [options]` on 127.0.0.1 and a free port, in a child process, until the
    context ends (SIGTERM: it answers what is in flight, then exits)."""

    def __init__(self, model: str | Path, *options: str, start_timeout_s: float = 300):
        self.port = free_port()
        self.command = [sys.executable, "-m", "latentqa.cli", "serve", "--model", str(model), "--port",
                        str(self.port), *options]
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "LocalServer":
        self.log = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block the server
        self.process = subprocess.Popen(self.command, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"`{' '.join(self.command)}` did not start:\n{self.output()[-2000:]}")
            try:
                if http_json(self.port, "GET", "/health", timeout=2)[0] == 200:
                    return self
            except OSError:
                time.sleep(0.2)

    def output(self) -> str:
        """What the server printed so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def request(self, method: str, path: str, body=None, **options):
        return http_json(self.port, method, path, body, **options)

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then the exit code (killed after `timeout_s`)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __exit__(self, *exc) -> None:
        self.stop()
        self.log.close()
