"""Logging: the request id on every line; readable text in development, JSON lines in production."""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import UTC, datetime

import orjson
from flask import Flask, Response, g, has_request_context, request

from taskapi.http import metrics

# A JWT (or anything shaped like one) and Authorization values never reach a log line.
SECRET_RE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|(?i:bearer)\s+\S+")


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request id ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def redact(text: str) -> str:
    return SECRET_RE.sub("[redacted]", text)


class RedactFilter(logging.Filter):
    """Scrub token-shaped strings from messages, arguments, tracebacks and every extra field
    (a token pasted into a URL path ends up in `path`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if SECRET_RE.search(message):
            record.msg, record.args = redact(message), None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = {name: redact(value) if isinstance(value, str) else value for name, value in fields.items()}
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields given as `extra={"fields": {...}}` are merged in."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_text or record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return orjson.dumps(entry, default=str).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(app: Flask) -> None:
    """Route the taskapi loggers to stderr in the configured format (gunicorn collects stderr),
    and log one line per request (the access log) with the request's metrics."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter() if app.config["LOG_FORMAT"] == "json" else logging.Formatter(TEXT_FORMAT))
    logger = logging.getLogger("taskapi")
    logger.handlers[:] = [handler]
    logger.setLevel(app.config["LOG_LEVEL"])
    logger.propagate = False


request_log = logging.getLogger("taskapi.request")


def start_timer() -> None:
    g.started = time.perf_counter()


def log_request(response: Response) -> Response:
    """One line per request: method, route template, status, duration, request id, user id."""
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule else "unmatched"
    metrics.observe(request.method, route, response.status_code, seconds)
    if not request_log.isEnabledFor(logging.INFO):
        return response
    claims = g.get("token_claims") or {}
    fields = {"method": request.method, "route": route, "path": request.path, "status": response.status_code,
              "duration_ms": round(seconds * 1000, 2), "user_id": claims.get("sub"),
              "remote_addr": request.remote_addr}
    request_log.info("%s %s %s %.1fms user=%s", request.method, request.path, response.status_code,
                     seconds * 1000, claims.get("sub") or "-", extra={"fields": fields})
    return response


def register_request_logging(app: Flask) -> None:
    app.before_request(start_timer)
    app.after_request(log_request)
