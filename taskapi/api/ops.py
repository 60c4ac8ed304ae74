"""Operations: liveness and readiness probes, and the docs page's local assets."""

from __future__ import annotations

import flask
import swagger_ui_bundle

from config import ROOT
from taskapi.http.blueprint import Blueprint
from taskapi.schemas.common import HealthSchema, ReadinessSchema
from taskapi.services import health

blp = Blueprint("ops", __name__, description="Probes for load balancers and orchestrators.")
blp.exempt_from_rate_limits = True  # load balancers poll the probes

# Swagger UI's files come from the swagger-ui-bundle wheel: /docs works offline, no CDN.
assets = flask.Blueprint("docs_assets", __name__)
assets.exempt_from_rate_limits = True  # type: ignore[attr-defined]


@assets.get("/docs/assets/<path:filename>")
def docs_asset(filename: str):
    """Serve a Swagger UI asset from the installed bundle."""
    return flask.send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=86400)


PARSE_ERROR = "The request could not be parsed (answered by the server before any route runs)."


@assets.get("/license")
def license_text() -> flask.Response:
    """The licence the OpenAPI document's `info.license.url` points to."""
    return flask.send_from_directory(ROOT, "LICENSE", mimetype="text/plain", max_age=86400)


@blp.route("/healthz", methods=["GET"])
@blp.response(200, HealthSchema())
@blp.problem(400, PARSE_ERROR)
def healthz():
    """Liveness: the process answers; no dependency is touched.

    For load balancers and orchestrators: 200 while the process can answer. Never rate limited,
    never touches MongoDB or Redis, and answered even while every worker thread is busy.
    """
    return {"status": "ok"}


@blp.route("/readyz", methods=["GET"])
@blp.response(200, ReadinessSchema())
@blp.alt_response(503, schema=ReadinessSchema, description="A dependency is down; `checks` names it.")
@blp.problem(400, PARSE_ERROR)
def readyz():
    """Readiness: MongoDB and Redis both answer a ping.

    200 when MongoDB and Redis both answer a ping within their timeouts; 503 with `Retry-After`
    and `checks` naming what is down otherwise. Route traffic only to instances that are ready.
    """
    checks = health.readiness()
    ok = all(state == "ok" for state in checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    if ok:
        return body
    return body, 503, {"Retry-After": "5"}
