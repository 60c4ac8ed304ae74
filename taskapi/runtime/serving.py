"""gunicorn extensions: a gthread worker that answers gunicorn's own parse errors as
problem+json and keeps a lane free for the liveness probe, and an access logger that writes
one JSON object per request.

gunicorn rejects some requests before the app sees them (a request line over
limit_request_line, too many headers, a malformed request line) and writes an HTML page for
them; this worker writes the RFC 9457 envelope every other error uses.

`GET /healthz` must answer while every request thread waits on a slow dependency (a
liveness probe that times out gets a healthy worker killed). The worker looks at each
request before it is queued (MSG_PEEK: nothing is consumed) and runs probes on a thread of
their own; the app answers them as always (headers, log line, metrics). New connections wait
for their first bytes in the poller, not in a request thread, so a silent client holds none.

The access logger escapes every value properly (a format string would not) and carries the
request id.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
import uuid
from concurrent import futures
from datetime import UTC, datetime
from functools import partial

from gunicorn import util
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import TConn, ThreadWorker

PROBE_REQUEST_LINES = (b"GET /healthz ", b"HEAD /healthz ", b"GET /healthz?", b"HEAD /healthz?")


def write_problem(sock, status_int: int, reason: str, mesg: str) -> None:
    request_id = uuid.uuid4().hex
    body = json.dumps({"type": "about:blank", "title": reason, "status": status_int,
                       "detail": f"The server could not accept this request: {reason.lower()}.",
                       "request_id": request_id}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n"
            f"X-Request-ID: {request_id}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1") + body)


class ProblemThreadWorker(ThreadWorker):
    def init_process(self) -> None:
        util.write_error = write_problem  # gunicorn looks it up at call time
        self.probe_pool = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="probe")
        super().init_process()

    def accept(self, listener) -> None:
        """A new connection waits for its first bytes in the poller, then is dispatched."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError:
            return  # EAGAIN / ECONNABORTED: another worker took it, or the client left
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def enqueue_req(self, conn) -> None:
        """Probes to their own thread, everything else to the request threads."""
        pool = self.probe_pool if is_probe(conn) else self.tpool
        future = pool.submit(self.handle, conn)
        future.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.probe_pool.shutdown(wait=False)


def is_probe(conn) -> bool:
    """Does the next request on this connection start with `GET /healthz`? (Peeked, not read.)"""
    if conn.parser is not None and conn.parser.unreader.buf.getvalue():
        return False  # bytes already read ahead: the parser's, not the socket's
    try:
        head = conn.sock.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (OSError, ValueError):
        return False  # nothing to read yet; TLS sockets refuse flags (ValueError)
    return head.startswith(PROBE_REQUEST_LINES)


class JsonAccessLogger(Logger):
    """Access log lines as JSON: time, method, path, status, bytes, duration_ms, request_id, …"""

    def access(self, resp, req, environ, request_time) -> None:
        if not (self.cfg.accesslog or self.cfg.logconfig or self.cfg.logconfig_dict or self.cfg.syslog):
            return
        headers = {name.lower(): value for name, value in (resp.headers or [])}
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "INFO",
            "logger": "gunicorn.access",
            "remote_addr": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": int(str(resp.status).split()[0]) if resp.status else None,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 2),
            "request_id": headers.get("x-request-id"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
        }
        try:
            self.access_log.info(json.dumps(entry))
        except Exception:  # noqa: BLE001 - logging must never break a response
            self.exception("could not write the access log line")
