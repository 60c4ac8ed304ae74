"""The response cache as a view decorator: `@cached(kind)` between argument parsing and the
response schema (services/cache.py keeps the entries)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response, current_app

from taskapi.http.auth import current_user_id
from taskapi.services.cache import field, lookup, store

KEPT_HEADERS = ("Link",)  # response headers stored with a cached body


def cached(kind: str, *, shared: Callable[[dict[str, Any]], bool] = lambda query: False) -> Callable[..., Any]:
    """A view decorator, between argument parsing and the response schema: answer from the
    cache keyed on the caller and the validated query; on a miss, run the view and store its
    200 answer. `X-Cache: HIT|MISS` says which. `shared(query)` marks answers that are the
    same for every caller allowed to ask (global stats): the view's guards run before this.
    """
    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(query: dict[str, Any], *args: Any, **kwargs: Any) -> Response:
            owner = None if shared(query) else current_user_id()
            name = field(kind, query)
            hit = lookup(owner, name)
            if hit is not None:
                body, headers = hit
                return json_response(body, "HIT", headers)
            response: Response = current_app.make_response(view(query, *args, **kwargs))
            if response.status_code == 200:
                store(owner, name, response.get_data(),
                      {header: response.headers[header] for header in KEPT_HEADERS if header in response.headers})
            response.headers["X-Cache"] = "MISS"
            return response

        return wrapper

    return decorator


def json_response(body: bytes, state: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON response from (cached) bytes, with `X-Cache: HIT|MISS`."""
    response = current_app.response_class(body, mimetype="application/json")
    response.headers.update(headers or {})
    response.headers["X-Cache"] = state
    return response
