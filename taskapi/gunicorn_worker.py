"""gunicorn's gthread worker, answering its own parse errors (414, 431, 400 …) as problem+json.

gunicorn rejects some requests before the app sees them (a request line over
limit_request_line, too many headers, a malformed request line) and writes an HTML page for
them. This worker writes the same RFC 9457 envelope every other error uses.
"""

from __future__ import annotations

import json
import uuid

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker


def write_problem(sock, status_int: int, reason: str, mesg: str) -> None:  # noqa: ANN001 - gunicorn's signature
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
        super().init_process()
