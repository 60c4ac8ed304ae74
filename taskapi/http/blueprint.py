"""The Blueprint every API module uses: behaviour declared on the view it applies to.

    @blp.route("/login", methods=["POST"])
    @blp.limit(login_rate, key=client_ip)        # rate limits on top of the per-identity budget
    @blp.auth_required(role="admin")             # the token guard (type, role), documented
    @blp.arguments(LoginSchema())                # a JSON body: the body gate lets one through
    @blp.idempotent()                            # Idempotency-Key replays (create_task)
    @blp.response(200, TokenPairSchema())
    @blp.problem(401, "...")                     # an error response, documented as problem+json

Each decorator both does its work and puts it in the OpenAPI document.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flask_smorest
from flask import g
from marshmallow import RAISE
from webargs import core
from webargs.flaskparser import FlaskParser

from taskapi.http.auth import verify_request_token
from taskapi.http.idempotency import PARAMETER as IDEMPOTENCY_KEY
from taskapi.http.idempotency import idempotent
from taskapi.http.limits import declare_limit
from taskapi.http.problems import PROBLEM_MIMETYPE
from taskapi.schemas.common import ProblemSchema

View = Callable[..., Any]


def operation_id(endpoint: str) -> str:
    head, *rest = endpoint.split("_")
    return head + "".join(word.capitalize() for word in rest)


class StrictParser(FlaskParser):
    """webargs parser that reads the already-gated body and refuses unknown query parameters."""

    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": RAISE, "querystring": RAISE}

    def _raw_load_json(self, req):
        return g.get("json_body", core.missing)


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest Blueprint that marks the views taking a JSON body for the body gate."""

    ARGUMENTS_PARSER = StrictParser()

    def route(self, rule: str, *, parameters: Any = None, tags: Any = None, **options: Any) -> Callable[[View], View]:
        """flask-smorest's route, plus what every operation's documentation needs: an
        `operationId` named after the view (`list_tasks` -> `listTasks`, which generated
        clients turn into function names) and, for a view without `auth_required`,
        `security: []` (public)."""
        register = super().route(rule, parameters=parameters, tags=tags, **options)

        def decorator(func: View) -> View:
            manual = getattr(func, "_apidoc", {}).get("manual_doc", {})
            extra: dict[str, Any] = {"operationId": operation_id(options.get("endpoint") or func.__name__)}
            if "security" not in manual:
                extra["security"] = []
            documented = set(getattr(func, "_apidoc", {}).get("response", {}).get("responses", {}))
            if not getattr(self, "exempt_from_rate_limits", False):
                # Every route but the probes spends the caller's overall budget, and needs its stores.
                if 429 not in documented:
                    func = self.problem(429, "Too many requests (the caller's overall budget, RATELIMIT_DEFAULT); "
                                             "retry after `Retry-After` seconds.")(func)
                if 503 not in documented:
                    func = self.problem(503, "Redis or MongoDB unavailable; retry after `Retry-After`.")(func)
            return register(self.doc(**extra)(func))

        return decorator

    def arguments(self, schema, *, location="json", **kwargs):
        decorator = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return decorator

        def mark(func):
            wrapped = decorator(func)
            wrapped._takes_json = True
            return wrapped

        return mark

    def auth_required(self, *, refresh: bool = False, role: str | None = None) -> Callable[[View], View]:
        """Require a valid, unrevoked token of the given type (and role, which the token
        carries); documents the bearer scheme, the 401 and, with a role, the 403."""

        def decorator(func: View) -> View:
            @functools.wraps(func)
            def guard(*args: Any, **kwargs: Any) -> Any:
                verify_request_token(refresh=refresh, role=role)
                return func(*args, **kwargs)

            guarded: View = guard
            guarded = self.doc(security=[{"bearerAuth": []}])(guarded)
            guarded = self.problem(401, "Missing, invalid, expired or revoked token.")(guarded)
            if role is not None:
                guarded = self.problem(403, f"The token's role is not {role}.")(guarded)
            return guarded  # its 429 and 503 are documented by `route`, as on every limited route

        return decorator

    def limit(self, rate: Callable[[], str], *, key: Callable[[], str]) -> Callable[[View], View]:
        """A rate limit of this route (on top of every caller's overall budget): `rate()` names
        it from the configuration, `key()` says whose budget a request spends. Checked before
        the view, with the others, by the app's limiter (http/limits.py); answers 429."""

        def decorator(func: View) -> View:
            limited = declare_limit(func, rate, key)
            return self.problem(429, "Too many requests; retry after `Retry-After` seconds.")(limited)

        return decorator

    def idempotent(self) -> Callable[[View], View]:
        """Honour `Idempotency-Key` (http/idempotency.py): a retry replays the first response.
        Goes between `arguments` and `response`; documents the header."""

        def decorator(func: View) -> View:
            return self.doc(parameters=[IDEMPOTENCY_KEY])(idempotent(func))

        return decorator

    def problem(self, status: int, description: str) -> Callable[[View], View]:
        """Document an error response as problem+json."""
        return self.alt_response(status, schema=ProblemSchema, content_type=PROBLEM_MIMETYPE, description=description)
