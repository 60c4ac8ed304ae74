"""taskapi: the application factory, one step per concern, each named for what it does.

The order of the steps is the order of the request hooks: Flask runs `before_request` hooks
in the order they were added and `after_request` hooks in reverse, so what is added first
sees a request first and its response last (the log line, with the final status).
"""

from __future__ import annotations

import pymongo
from flask import Flask

from config import Config, get_config
from taskapi.api import auth, keys, ops, stats, tasks, users, webhooks
from taskapi.cli import register_commands
from taskapi.extensions import init_mongo, init_redis
from taskapi.http import body, headers, logs
from taskapi.http.api import init_api
from taskapi.http.blueprint import Blueprint
from taskapi.http.limits import init_limiter
from taskapi.http.metrics import mount_metrics
from taskapi.http.problems import register_error_handlers
from taskapi.services import auth as accounts
from taskapi.services import members
from taskapi.services.cache import init_cache
from taskapi.services.tokens import init_jwt, init_passwords


class TaskApiFlask(Flask):
    """Flask with one MongoDB time budget per request: every MongoDB operation of a request
    shares MONGODB_REQUEST_TIMEOUT_MS (pymongo's client-side operation timeout), and each
    carries the remaining budget as maxTimeMS, so the server abandons work the client no
    longer waits for. A request past its budget answers 503 (http/problems.dependency_problem)."""

    def full_dispatch_request(self):
        with pymongo.timeout(self.config["MONGODB_REQUEST_TIMEOUT_MS"] / 1000):
            return super().full_dispatch_request()


def create_app(config: Config | str | None = None) -> Flask:
    """Build the app from a Config object, a config name, or TASKAPI_ENV."""
    if not isinstance(config, Config):
        config = get_config(config)
    app = TaskApiFlask(__name__)
    app.config.from_object(config)
    app.config["ENV_NAME"] = config.ENV_NAME

    logs.configure_logging(app)
    connect_datastores(app)
    init_jwt(app)
    init_passwords(app)
    wire_account_facts(app)
    add_request_hooks(app)
    mount_routes(app)
    headers.init_security_headers(app)
    init_limiter(app)  # after the routes: it reads the limits and exemptions they declare
    register_error_handlers(app)
    register_commands(app)
    return app


def connect_datastores(app: Flask) -> None:
    """MongoDB, the main Redis (revocation, limits, idempotency) and the cache's own Redis."""
    init_mongo(app)
    init_redis(app)
    init_cache(app)


def wire_account_facts(app: Flask) -> None:
    """Where each side reads account facts (see services/members.py). The monolith applies an
    account change to the tasks side's copy in the change's own transaction; the auth service
    announces it through its outbox instead. A lost Redis generation mirror is rebuilt from the
    copy this service owns: `users` (auth, all) or `members` (tasks)."""
    service = app.config["TASKAPI_SERVICE"]
    if service == "all":
        app.extensions["members"] = members
    app.extensions["durable_generation"] = (members.durable_generation if service == "tasks"
                                            else accounts.durable_generation)


def add_request_hooks(app: Flask) -> None:
    """What happens to every request, in order, before and after its view."""
    app.json = body.OrjsonProvider(app)
    app.before_request(logs.start_timer)
    app.before_request(headers.assign_request_id)
    app.before_request(body.gate_request_body)
    # After the view, last added runs first: the rate limiter's headers (added later, in
    # init_limiter) come before drop_stray_retry_after, which runs before no_store and the
    # request id; the log line is written last, with the final status.
    app.after_request(logs.log_request)
    app.after_request(headers.add_request_id)
    app.after_request(headers.no_store)
    app.after_request(headers.drop_stray_retry_after)


# What each service serves (TASKAPI_SERVICE); every one serves the probes, /metrics, /openapi.json
# and /docs of its own routes, and 404 for the others'.
SERVICES: dict[str, list[tuple[Blueprint, str | None]]] = {
    "auth": [(auth.blp, "/api/v1/auth"), (keys.blp, None), (users.blp, "/api/v1/users")],
    "tasks": [(tasks.blp, "/api/v1/tasks"), (stats.blp, "/api/v1/stats"), (webhooks.blp, "/api/v1/webhooks")],
}


def mount_routes(app: Flask) -> None:
    """The API blueprints of this service (and their OpenAPI), the docs assets and /metrics."""
    api = init_api(app)
    api.register_blueprint(ops.blp)
    app.register_blueprint(ops.assets)
    service = app.config["TASKAPI_SERVICE"]
    for name, blueprints in SERVICES.items():
        if service in ("all", name):
            for blueprint, prefix in blueprints:
                api.register_blueprint(blueprint, url_prefix=prefix)
    mount_metrics(app)
