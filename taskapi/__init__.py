"""taskapi: the application factory, made of one named step per concern."""

from __future__ import annotations

import pymongo
from flask import Flask

from config import Config, get_config


class TaskApiFlask(Flask):
    """Flask with one MongoDB time budget per request: every MongoDB operation of a request
    shares MONGODB_REQUEST_TIMEOUT_MS (pymongo's client-side operation timeout), and each
    carries the remaining budget as maxTimeMS, so the server abandons work the client no
    longer waits for. A request past its budget answers 503 (errors.dependency_problem)."""

    def full_dispatch_request(self):  # type: ignore[no-untyped-def]
        with pymongo.timeout(self.config["MONGODB_REQUEST_TIMEOUT_MS"] / 1000):
            return super().full_dispatch_request()


def create_app(config: Config | str | None = None) -> Flask:
    """Build the app from a Config object, a config name, or TASKAPI_ENV."""
    if not isinstance(config, Config):
        config = get_config(config)
    app = TaskApiFlask(__name__)
    app.config.from_object(config)
    app.config["ENV_NAME"] = config.ENV_NAME

    register_logging(app)
    register_extensions(app)
    register_blueprints(app)
    register_hardening(app)
    register_errors(app)
    register_commands(app)
    return app


def register_logging(app: Flask) -> None:
    from taskapi.logs import configure_logging, register_request_logging
    from taskapi.metrics import init_metrics

    configure_logging(app)
    register_request_logging(app)
    init_metrics(app)


def register_extensions(app: Flask) -> None:
    from taskapi.extensions import init_api, init_mongo, init_redis
    from taskapi.security import init_jwt
    from taskapi.services.cache import init_cache
    from taskapi.web import register_request_hooks

    register_request_hooks(app)
    init_mongo(app)
    init_redis(app)
    init_jwt(app)
    init_cache(app)
    init_api(app)


def register_blueprints(app: Flask) -> None:
    from taskapi.api import auth, ops, stats, tasks, users
    from taskapi.extensions import get_api

    api = get_api(app)
    api.register_blueprint(ops.blp)
    app.register_blueprint(ops.assets)
    api.register_blueprint(auth.blp, url_prefix="/api/v1/auth")
    api.register_blueprint(tasks.blp, url_prefix="/api/v1/tasks")
    api.register_blueprint(stats.blp, url_prefix="/api/v1/stats")
    api.register_blueprint(users.blp, url_prefix="/api/v1/users")


def register_hardening(app: Flask) -> None:
    from taskapi.hardening import init_hardening

    init_hardening(app)


def register_errors(app: Flask) -> None:
    from taskapi.errors import register_error_handlers

    register_error_handlers(app)


def register_commands(app: Flask) -> None:
    from taskapi.commands import register

    register(app)
