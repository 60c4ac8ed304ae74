"""The flask-smorest Api: one per app (the OpenAPI spec is per app), problem+json errors
documented as such, the `<id:…>` converter and the bearer security scheme."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import flask
from flask import Flask, Response
from flask_smorest import Api
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from taskapi.http import problems
from taskapi.http.headers import DOCS_CSP, view_policy
from taskapi.schemas.common import ProblemSchema


class TaskApi(Api):
    """flask-smorest Api whose errors are problem+json and documented as such."""

    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error: HTTPException) -> Any:  # flask-smorest's hook
        return problems.handle_http_exception(error)

    def _register_swagger_ui_rule(self, blueprint: flask.Blueprint) -> None:
        """The /docs page, with the security policy it needs declared on it; the docs
        blueprint (/openapi.json, /docs) is never rate limited."""
        blueprint.exempt_from_rate_limits = True  # type: ignore[attr-defined]
        path, assets = self.config.get("OPENAPI_SWAGGER_UI_PATH"), self.config.get("OPENAPI_SWAGGER_UI_URL")
        if path is None or assets is None:
            return
        self._swagger_ui_url = assets

        @view_policy(content_security_policy=DOCS_CSP, content_security_policy_nonce_in=["script-src"])
        def docs_page() -> Response:
            return self._openapi_swagger_ui()

        blueprint.add_url_rule("/" + path.lstrip("/"), endpoint="openapi_swagger_ui", view_func=docs_page)

    def _register_pagination_header(self) -> None:
        """Not used: pages are keyset pages with `next_cursor` and `Link`, not flask-smorest's
        X-Pagination header (whose schema would sit unused in the document)."""

    def _register_responses(self) -> None:
        """The shared error responses (UNPROCESSABLE_ENTITY, DEFAULT_ERROR, …) are problem+json."""
        for status in HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["content"] = {problems.PROBLEM_MIMETYPE: {"schema": "Problem"}}
            self.spec.components.response(status.name, response, lazy=True)
        self.spec.components.response(
            "DEFAULT_ERROR",
            {"description": "Any other error (RFC 9457 problem details).",
             "content": {problems.PROBLEM_MIMETYPE: {"schema": "Problem"}}},
            lazy=True,
        )


class IdConverter(BaseConverter):
    """`<id:…>` path segments: documented as 24-hex ObjectIds, matched loosely so that a
    malformed id reaches the service and gets the very 404 an unknown id gets."""

    regex = "[^/]+"


ID_SCHEMA = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$", "example": "6b0cf4e5d9870db21da3bdfa"}


def init_api(app: Flask) -> TaskApi:
    """One Api per app (the OpenAPI spec is per app), kept in app.extensions."""
    app.url_map.converters["id"] = IdConverter
    app.extensions["taskapi_api"] = api = TaskApi(app)
    api.register_converter(IdConverter, lambda converter: dict(ID_SCHEMA))
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                       "description": "Access token from POST /api/v1/auth/login (refresh token for /auth/refresh)."})
    return api


def get_api(app: Flask) -> TaskApi:
    return app.extensions["taskapi_api"]
