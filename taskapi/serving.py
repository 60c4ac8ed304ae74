"""gunicorn extensions: a gthread worker that answers gunicorn's own parse errors as
problem+json, and an access logger that writes one JSON object per request.

gunicorn rejects some requests before the app sees them (a request line over
limit_request_line, too many headers, a malformed request line) and writes an HTML page for
them; this worker writes the RFC 9457 envelope every other error uses. The access logger
escapes every value properly (a format string would not) and carries the request id.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from gunicorn import util
from gunicorn.glogging import Logger
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


class JsonAccessLogger(Logger):
    """Access log lines as JSON: time, method, path, status, bytes, duration_ms, request_id, …"""

    def access(self, resp, req, environ, request_time) -> None:  # noqa: ANN001 - gunicorn's signature
        if not (self.cfg.accesslog or self.cfg.logconfig or self.cfg.logconfig_dict or self.cfg.syslog):
            return
        headers = dict((name.lower(), value) for name, value in (resp.headers or []))
        entry = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
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
