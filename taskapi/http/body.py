"""JSON in and out: orjson for responses, and the body gate: a body only where a route takes
JSON, and then exactly one strict RFC 8259 object (no duplicate keys, NaN, lone surrogates,
NUL, or nesting past MAX_JSON_DEPTH), read at most MAX_CONTENT_LENGTH bytes, chunked or not."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson
from bson import ObjectId
from flask import Response, current_app, g, request
from flask.json.provider import JSONProvider
from werkzeug.exceptions import RequestEntityTooLarge

from taskapi.clock import format_timestamp
from taskapi.errors import BadRequest, UnsupportedMediaType

MAX_JSON_DEPTH = 32
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _default(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


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
