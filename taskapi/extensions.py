"""Unbound extension objects, bound in the factory; MongoDB and Redis connect lazily (fork-safe)."""

from __future__ import annotations

from http import HTTPStatus

import mongoengine
import redis
from flask import Flask, current_app
from flask_smorest import Api
from pymongo.database import Database
from werkzeug.routing import BaseConverter

from taskapi import errors
from taskapi.models import server_engine
from taskapi.schemas.common import ProblemSchema


class TaskApi(Api):
    """flask-smorest Api whose errors are problem+json and documented as such."""

    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error):  # called by flask-smorest for every HTTPException
        return errors.handle_http_exception(error)

    def _register_responses(self):
        """The shared error responses (UNPROCESSABLE_ENTITY, DEFAULT_ERROR, …) are problem+json."""
        for status in HTTPStatus:
            response = {"description": status.phrase}
            if status >= 400:
                response["content"] = {errors.PROBLEM_MIMETYPE: {"schema": "Problem"}}
            self.spec.components.response(status.name, response, lazy=True)
        self.spec.components.response(
            "DEFAULT_ERROR",
            {"description": "Any other error (RFC 9457 problem details).",
             "content": {errors.PROBLEM_MIMETYPE: {"schema": "Problem"}}},
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

MONGO_ALIAS = "default"


def init_mongo(app: Flask) -> None:
    """Register the MongoEngine connection without connecting: each gunicorn worker connects itself."""
    mongoengine.disconnect(alias=MONGO_ALIAS)  # a second app in one process (tests) rebinds it
    timeout = app.config["MONGODB_TIMEOUT_MS"]
    mongoengine.connect(
        alias=MONGO_ALIAS,
        host=app.config["MONGODB_URI"],
        connect=False,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        # No socket timeout of its own: a request has its time budget (TaskApiFlask), and a
        # command may legitimately wait minutes on the server (building an index, say).
        socketTimeoutMS=None,
        appname="taskapi",
    )


def get_db() -> Database:
    """The pymongo Database behind MongoEngine, for migrations, pings and aggregations."""
    return mongoengine.get_db(alias=MONGO_ALIAS)


ENGINES = ("mongodb", "secantus")


def mongodb_engine() -> str:
    """Which server answers MONGODB_URI: "mongodb", or "secantus" (the embedded SecantusDB, whose
    planner wants queries written differently; see services/tasks.py). Asked once per process
    (`buildInfo`: SecantusDB reports `secantusVersion`), unless MONGODB_ENGINE names it."""
    engine = current_app.config["MONGODB_ENGINE"]
    if engine == "auto":
        engine = current_app.extensions.get("mongodb_engine")
        if engine is None:
            engine = current_app.extensions["mongodb_engine"] = server_engine(get_db().client)
    return engine


def init_redis(app: Flask) -> None:
    """One pooled client per process; redis-py's pool reconnects after fork and after an outage."""
    timeout = app.config["REDIS_TIMEOUT_SECONDS"]
    app.extensions["redis"] = redis.Redis.from_url(
        app.config["REDIS_URL"],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def get_redis() -> redis.Redis:
    return current_app.extensions["redis"]


def redis_eviction_warning(url: str, cache_url: str) -> str | None:
    """Why this Redis is unsafe for revocation state, or None (also when it cannot be asked:
    managed services often forbid CONFIG)."""
    if url == cache_url:
        return ("REDIS_URL and CACHE_REDIS_URL name the same Redis: cache data can crowd out "
                "revocation state; give the cache a Redis of its own")
    try:
        policy = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).config_get(
            "maxmemory-policy").get("maxmemory-policy")
    except redis.RedisError:
        return None
    if policy and policy != "noeviction":
        return (f"REDIS_URL's Redis has maxmemory-policy {policy}: it may evict sessions and "
                "revocations under memory pressure; set it to noeviction")
    return None
