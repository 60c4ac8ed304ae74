"""Unbound extension objects, bound in the factory; MongoDB and Redis connect lazily (fork-safe)."""

from __future__ import annotations

import mongoengine
import redis
from flask import Flask, current_app
from flask_smorest import Api
from pymongo.database import Database

from taskapi import errors
from taskapi.schemas.common import ProblemSchema


class TaskApi(Api):
    """flask-smorest Api whose errors are problem+json and documented as such."""

    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error):  # called by flask-smorest for every HTTPException
        return errors.handle_http_exception(error)


def init_api(app: Flask) -> TaskApi:
    """One Api per app (the OpenAPI spec is per app), kept in app.extensions."""
    app.extensions["taskapi_api"] = api = TaskApi(app)
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
        socketTimeoutMS=max(timeout * 5, 10_000),
        appname="taskapi",
    )


def get_db() -> Database:
    """The pymongo Database behind MongoEngine, for migrations, pings and aggregations."""
    return mongoengine.get_db(alias=MONGO_ALIAS)


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
