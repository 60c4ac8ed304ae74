"""Webhook receivers for tests: real HTTP servers on loopback that record what they get and
answer as scripted (a status per request, or hang), and a verifier built on the
`standardwebhooks` package (the reference implementation receivers use)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each request with the next status of `script` (then `status`); `hang` seconds of
    silence before answering (a slow receiver)."""

    status: int = 200
    script: list[int] = field(default_factory=list)
    hang: float = 0.0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body, time.monotonic()))
                    status = receiver.script.pop(0) if receiver.script else receiver.status
                if receiver.hang:
                    time.sleep(receiver.hang)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):  # the sender gave up (its timeout)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def wait_for(self, count: int, timeout: float = 20, *, event_type: str | None = None) -> list[Received]:
        """Wait until `count` requests (of this event type) arrived; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = [r for r in self.received if event_type is None or r.json["type"] == event_type]
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.05)


@contextmanager
def receiver(**options: Any) -> Iterator[Receiver]:
    server = Receiver(**options).start()
    try:
        yield server
    finally:
        server.stop()


def verify(secret: str, request: Received) -> Any:
    """The payload if the Standard Webhooks signature checks out (raises otherwise)."""
    headers = {k: request.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    return Webhook(secret).verify(request.body, headers)
