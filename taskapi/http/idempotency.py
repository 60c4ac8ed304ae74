"""`Idempotency-Key` as a view decorator: `@blp.idempotent()` between argument parsing and the
response schema (services/idempotency.py keeps the records in Redis).

A first request with a key runs the view and stores its finished response (status, body,
Location and ETag); a retry with the same key and body replays it with
`Idempotent-Replayed: true`; another body is a 422 and a retry while the first still runs a 409.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, g, jsonify, request

from taskapi.http.auth import current_user_id
from taskapi.services import idempotency

REPLAYED_HEADERS = ("Location", "ETag")
PARAMETER = {"in": "header", "name": "Idempotency-Key", "required": False,
             "schema": {"type": "string", "minLength": 1, "maxLength": idempotency.MAX_KEY_LENGTH,
                        "pattern": "^[\\x21-\\x7e]+$"},
             "description": "Replays the first response for 24 h instead of creating a second task."}


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(body: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(body, *args, **kwargs)
        owner = current_user_id()
        key = idempotency.validate_key(key)
        digest = idempotency.body_digest(g.json_body)
        stored = idempotency.begin(user_id=owner, key=key, digest=digest)
        if stored is not None:
            return replay(stored)
        try:
            response: Response = current_app.make_response(view(body, *args, **kwargs))
        except Exception:
            idempotency.abandon(user_id=owner, key=key)
            raise
        idempotency.complete(user_id=owner, key=key, digest=digest, status=response.status_code,
                             body=response.get_json(),
                             headers={name: response.headers[name] for name in REPLAYED_HEADERS if name in response.headers})
        return response

    return wrapper


def replay(stored: dict[str, Any]) -> Response:
    response = jsonify(stored["body"])
    response.status_code = stored["status"]
    response.headers.update(stored["headers"])
    response.headers["Idempotent-Replayed"] = "true"
    return response
