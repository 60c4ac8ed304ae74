"""The one RFC 9457 problem+json envelope every error response uses, and the handlers that
turn service errors, HTTP errors and dependency failures into it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import pymongo.errors
import redis.exceptions
from flask import Flask, Response, current_app, g, json
from werkzeug.exceptions import HTTPException

from taskapi.errors import ApiError, ServiceUnavailable

log = logging.getLogger("taskapi.errors")

PROBLEM_MIMETYPE = "application/problem+json"


def problem(
    status: int,
    detail: str,
    *,
    errors: Mapping[str, list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Response:
    """Build the problem+json response every error path shares."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "request_id": g.get("request_id"),
    }
    if errors:
        body["errors"] = errors
    response = current_app.response_class(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if status == 503:
        retry_after = response.headers.setdefault("Retry-After",
                                                  str(current_app.config["DEPENDENCY_RETRY_AFTER_SECONDS"]))
        g.dependency_retry_after = retry_after  # kept over the rate limiter's window (headers.py)
    return response


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn marshmallow's nested messages into `{"field.sub": ["msg", …]}`."""
    if isinstance(messages, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            for field, items in flatten_messages(value, name).items():
                flat.setdefault(field, []).extend(items)
        return flat
    if isinstance(messages, (list, tuple)) and all(isinstance(m, str) for m in messages):
        return {prefix or "_schema": list(messages)}
    if isinstance(messages, (list, tuple)):
        flat = {}
        for item in messages:
            for field, items in flatten_messages(item, prefix).items():
                flat.setdefault(field, []).extend(items)
        return flat
    return {prefix or "_schema": [str(messages)]}


def webargs_errors(data: Mapping[str, Any]) -> dict[str, list[str]]:
    """webargs reports `{"json": {...}, "query": {...}}`; clients want the field names."""
    flat: dict[str, list[str]] = {}
    for location_messages in (data.get("messages") or {}).values():
        for field, items in flatten_messages(location_messages).items():
            flat.setdefault(field, []).extend(items)
    return flat


def handle_http_exception(error: HTTPException) -> Response | HTTPException:
    """Werkzeug/flask-smorest HTTP errors (404, 405, 413, webargs 422, …) as problem+json."""
    if error.code is None or error.code < 400:
        return error  # routing redirects pass through untouched
    data = getattr(error, "data", None) or {}
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    headers.update(data.get("headers") or {})
    errors = webargs_errors(data) if data.get("messages") else None
    if error.code == 422 and errors:
        detail = "The request failed validation; see errors for each field."
    elif error.code == 429:
        detail = f"Too many requests (limit: {error.description}); retry after Retry-After seconds."
    else:
        detail = DETAILS.get(error.code) or error.description or HTTPStatus(error.code).phrase
    if error.code == 500:
        original = getattr(error, "original_exception", None)
        if original is not None:
            log.error("unhandled exception", exc_info=original)
    return problem(error.code, detail, errors=errors, headers=headers)


DETAILS = {
    400: "The request is malformed.",
    404: "The requested resource was not found.",
    405: "The method is not allowed for this resource.",
    413: "The request body is larger than the server accepts.",
    500: "The server failed to complete the request; it has been logged with the request id.",
}


def handle_api_error(error: ApiError) -> Response:
    return problem(error.status, error.detail, errors=error.errors, headers=error.headers)


def handle_dependency_down(error: Exception) -> Response:
    """MongoDB or Redis unreachable, refusing or too slow: 503 with a short Retry-After, never a 500 or a hang."""
    detail = dependency_problem(error)
    if detail is None:
        return handle_unexpected(error)
    log.warning("dependency failed: %s (%s)", detail, error.__class__.__name__)
    return handle_api_error(ServiceUnavailable(detail))


def dependency_problem(error: Exception) -> str | None:
    """What to tell the client about a MongoDB or Redis failure; None for a programming error."""
    if isinstance(error, redis.exceptions.RedisError):
        if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            return "Redis is unavailable; retry shortly."
        # A refusal inside a Lua script arrives as a script error that quotes it.
        if isinstance(error, redis.exceptions.OutOfMemoryError) or "OOM " in str(error):
            return "Redis is out of memory and refused the write; nothing was changed. Retry shortly."
        if isinstance(error, redis.exceptions.ReadOnlyError) or "READONLY " in str(error):
            return "Redis is read-only (a failover may be in progress); nothing was changed. Retry shortly."
        return "Redis refused the request; nothing was changed. Retry shortly."
    if isinstance(error, pymongo.errors.PyMongoError):
        if isinstance(error, pymongo.errors.ServerSelectionTimeoutError):
            return "MongoDB is unavailable; retry shortly."
        if isinstance(error, pymongo.errors.WriteConcernError):  # MONGODB_WTIMEOUT_MS passed, or too few members
            log.warning("MongoDB write concern not satisfied: %s", error)
            return ("MongoDB did not confirm the write on enough members of its replica set (MONGODB_WRITE_CONCERN) "
                    "in time; it may still be applied. Read it back, or retry with the same Idempotency-Key.")
        if getattr(error, "timeout", False):  # the request's time budget ran out (maxTimeMS, socket)
            # A write waiting for its majority ends here too (within a request the time budget
            # replaces MONGODB_WTIMEOUT_MS), so it may still be applied.
            return ("MongoDB did not answer in time; a write may still be applied: read it back, or retry "
                    "with the same Idempotency-Key.")
        if isinstance(error, pymongo.errors.ConnectionFailure):
            return "MongoDB is unavailable; retry shortly."
    return None


def handle_unexpected(error: Exception) -> Response:
    log.error("unhandled exception", exc_info=error)
    return problem(500, DETAILS[500])


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(pymongo.errors.PyMongoError, handle_dependency_down)
    app.register_error_handler(redis.exceptions.RedisError, handle_dependency_down)
    app.register_error_handler(Exception, handle_unexpected)
