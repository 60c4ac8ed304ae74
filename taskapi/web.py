"""HTTP plumbing shared by every blueprint: JSON in and out, the body gate, request ids."""

from __future__ import annotations

import functools
import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import flask_smorest
import orjson
from bson import ObjectId
from flask import Flask, Response, current_app, g, request
from flask.json.provider import JSONProvider
from marshmallow import RAISE
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import RequestEntityTooLarge

from taskapi.errors import BadRequest, UnsupportedMediaType

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_JSON_DEPTH = 32
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _default(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix; milliseconds (MongoDB's precision) only when non-zero."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


class OrjsonProvider(JSONProvider):
    """orjson out (fast), the strict parser in."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=_default).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return strict_loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        return current_app.response_class(orjson.dumps(obj, default=_default), mimetype="application/json")


class _Reject(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Reject(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise _Reject(f"{name} is not valid JSON")


# The JSON parser's messages, in plain words (no parser internals in an API answer).
PLAIN_JSON_ERRORS = {
    "Expecting value": "a value was expected",
    "Expecting ',' delimiter": "a comma was expected",
    "Expecting ':' delimiter": "a colon was expected",
    "Expecting property name enclosed in double quotes": "a member name in double quotes was expected",
    "Unterminated string starting at": "a string is not closed",
    "Invalid control character at": "a string contains a raw control character (escape it)",
    "Invalid \\escape": "a string contains an invalid escape",
    "Invalid \\uXXXX escape": "a string contains an invalid \\u escape",
    "Extra data": "there is more than one JSON value",
    "Unexpected UTF-8 BOM (decode using utf-8-sig)": "it starts with a byte order mark",
}


def strict_loads(raw: str | bytes) -> Any:
    """Parse one JSON document the way RFC 8259 means it; anything doubtful is a 400."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8.") from None
    except RecursionError:
        raise BadRequest("The JSON body is nested too deeply.") from None
    except _Reject as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
    except json.JSONDecodeError as exc:
        reason = PLAIN_JSON_ERRORS.get(exc.msg, "it is malformed")
        raise BadRequest(f"The request body is not valid JSON: {reason} (line {exc.lineno}, "
                         f"column {exc.colno}).") from None
    except ValueError:  # an integer beyond Python's digit limit
        raise BadRequest("The request body is not valid JSON: a number has too many digits.") from None
    _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    """Reject depth beyond MAX_JSON_DEPTH, lone surrogates and NUL characters."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels.")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_string(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_string(item)


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise BadRequest("JSON strings must not contain NUL characters.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("JSON strings must not contain unpaired surrogates.") from None


def is_json_mimetype(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def gate_request_body() -> None:
    """Before any view: bodies only where a route takes JSON, and then one strict JSON object."""
    if request.method not in BODY_METHODS or request.endpoint is None:
        return
    view = current_app.view_functions.get(request.endpoint)
    takes_json = getattr(view, "_takes_json", False)
    length = request.content_length
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if length is not None and length > current_app.config["MAX_CONTENT_LENGTH"]:
        raise RequestEntityTooLarge()
    if not (length or chunked):
        if takes_json:
            raise BadRequest("The request body must be a JSON object.")
        return
    if not takes_json:
        raise UnsupportedMediaType("This endpoint takes no request body.")
    if not is_json_mimetype(request.mimetype):
        raise UnsupportedMediaType("The request body must be application/json.")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in {"utf-8", "utf8"}:
        raise UnsupportedMediaType("The request body must be encoded as UTF-8.")
    raw = read_body(current_app.config["MAX_CONTENT_LENGTH"])
    if not raw.strip():
        raise BadRequest("The request body must be a JSON object.")
    body = strict_loads(raw)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    g.json_body = body


def read_body(limit: int) -> bytes:
    """The body, at most `limit` bytes: 413 past it, with or without Content-Length.

    Werkzeug stops a chunked read at the limit without complaint (the body then looks
    truncated), so chunked bodies are read here from the server's terminated stream.
    """
    if request.content_length is not None:
        return request.get_data(cache=True)
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(chunks)


def assign_request_id() -> None:
    supplied = request.headers.get("X-Request-ID", "")
    g.request_id = supplied if REQUEST_ID_RE.fullmatch(supplied) else uuid.uuid4().hex


def add_request_id(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
    return response


class StrictParser(FlaskParser):
    """webargs parser that reads the already-gated body and refuses unknown query parameters."""

    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": RAISE, "querystring": RAISE}

    def _raw_load_json(self, req):  # noqa: ANN001 - webargs hook
        return g.get("json_body", core.missing)


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest Blueprint that marks the views taking a JSON body for the body gate."""

    ARGUMENTS_PARSER = StrictParser()

    def arguments(self, schema, *, location="json", **kwargs):  # noqa: ANN001, ANN201
        decorator = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return decorator

        def mark(func):
            wrapped = decorator(func)
            wrapped._takes_json = True
            return wrapped

        return mark

    def auth_required(self, *, refresh: bool = False):  # noqa: ANN201
        """Require a valid, unrevoked token of the given type; documents the bearer scheme and 401."""
        from taskapi.security import verify_request_token

        def decorator(func):
            @functools.wraps(func)
            def guarded(*args, **kwargs):
                verify_request_token(refresh=refresh)
                return func(*args, **kwargs)

            guarded = self.doc(security=[{"bearerAuth": []}])(guarded)
            guarded = self.problem(401, "Missing, invalid, expired or revoked token.")(guarded)
            return self.problem(503, "Redis or MongoDB unavailable; retry after `Retry-After`.")(guarded)

        return decorator

    def problem(self, status: int, description: str):  # noqa: ANN201
        """Document an error response as problem+json."""
        from taskapi.errors import PROBLEM_MIMETYPE
        from taskapi.schemas.common import ProblemSchema

        return self.alt_response(status, schema=ProblemSchema, content_type=PROBLEM_MIMETYPE, description=description)


def no_store(response: Response) -> Response:
    """API responses are per caller and change often: nothing may be stored by caches."""
    headers = response.headers
    headers.setdefault("Cache-Control", "no-store")
    if "HTTP_AUTHORIZATION" in request.environ:
        vary = headers.get("Vary")
        if not vary:
            headers["Vary"] = "Authorization"
        elif "authorization" not in vary.lower():
            headers["Vary"] = f"{vary}, Authorization"
    return response


def drop_stray_retry_after(response: Response) -> Response:
    """flask-limiter adds Retry-After (its window's reset) to every limited response: it belongs
    on 429 only. A 503 keeps the short dependency value its problem set."""
    if response.status_code == 503 and "dependency_retry_after" in g:
        response.headers["Retry-After"] = g.dependency_retry_after
    elif response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    return response


def register_request_hooks(app: Flask) -> None:
    app.json = OrjsonProvider(app)
    app.before_request(assign_request_id)
    app.before_request(gate_request_body)
    app.after_request(add_request_id)
    app.after_request(no_store)
    app.after_request(drop_stray_retry_after)  # registered before the limiter's hook, so it runs after it
