"""The connections every layer uses: MongoDB (through MongoEngine) and Redis, registered in the
factory and connected lazily (fork-safe: each gunicorn worker connects itself). A leaf: it
imports nothing of taskapi above the models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import mongoengine
import redis
import redis.sentinel
from flask import Flask, current_app
from flask_jwt_extended import JWTManager
from pymongo import ReadPreference, read_preferences
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.read_preferences import _ServerMode

from config import SENTINEL_SCHEMES, parse_sentinel_url
from taskapi.models import server_engine

PREFIX = "taskapi:"  # every Redis key of taskapi starts with this

# Unbound extension objects, bound to each app in the factory. (The rate limiter is built per
# app in http/limits.py: flask-limiter keeps its storage on the instance.)
jwt = JWTManager()  # issues tokens (services/tokens.init_jwt binds and configures it)

MONGO_ALIAS = "default"


def init_mongo(app: Flask) -> None:
    """Register the MongoEngine connection without connecting: each gunicorn worker connects itself."""
    mongoengine.disconnect(alias=MONGO_ALIAS)  # a second app in one process (tests) rebinds it
    timeout = app.config["MONGODB_TIMEOUT_MS"]
    mongoengine.connect(
        alias=MONGO_ALIAS,
        host=app.config["MONGODB_URI"],
        **replica_set_options(app.config),
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


def replica_set_options(config: Any) -> dict[str, Any]:
    """w, wtimeout, read concern and retries from the settings, for what MONGODB_URI leaves unsaid
    (its own options win: an Atlas URI with `w=majority&retryWrites=true` keeps them)."""
    query = {name.lower(): values[-1] for name, values in parse_qs(urlsplit(config["MONGODB_URI"]).query).items()}
    concern = config["MONGODB_WRITE_CONCERN"]
    defaults = {"w": int(concern) if concern.isdigit() else concern, "wTimeoutMS": config["MONGODB_WTIMEOUT_MS"],
                "readConcernLevel": config["MONGODB_READ_CONCERN"], "retryWrites": True, "retryReads": True}
    if str(query.get("w", defaults["w"])) != "majority" and "readconcernlevel" not in query:
        # A write acknowledged by fewer than a majority may not be majority-committed yet: a majority
        # read right after it could miss it. Reads follow the writes' level instead.
        defaults["readConcernLevel"] = "local"
    return {name: value for name, value in defaults.items() if name.lower() not in query}


def stats_read_preference(config: Any) -> _ServerMode:
    """Where the admin's global stats may read: MONGODB_STATS_READ_PREFERENCE, with
    MONGODB_STATS_MAX_STALENESS_SECONDS for the modes that may pick a secondary."""
    mode = config["MONGODB_STATS_READ_PREFERENCE"]
    if mode == "primary":
        return ReadPreference.PRIMARY
    staleness = config["MONGODB_STATS_MAX_STALENESS_SECONDS"]
    return read_preferences.make_read_preference(read_preferences.read_pref_mode_from_name(mode), None,
                                                 max_staleness=staleness)


def get_db() -> Database[dict[str, Any]]:
    """The pymongo Database behind MongoEngine, for migrations, pings and aggregations."""
    return cast("Database[dict[str, Any]]", mongoengine.get_db(alias=MONGO_ALIAS))


T = TypeVar("T")


def in_transaction(work: Callable[[ClientSession], T]) -> T:
    """Run `work(session)` in one transaction, retried as a whole on a transient error (a write
    conflict with a concurrent transaction); every write in it must pass `session=`.

    Durability is the server's: MongoDB's write concern (MONGODB_WRITE_CONCERN), and on the
    embedded SecantusDB the WiredTiger setting its runner starts it with (every commit's log is
    written out before the acknowledgement; runtime/devserver.EMBEDDED_WIREDTIGER_CONFIG)."""
    with get_db().client.start_session() as session:
        return session.with_transaction(work)


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
    return str(engine)


def redis_from_url(url: str, **options: Any) -> redis.Redis:
    """A Redis client for `redis://`/`rediss://` URLs, or for a Sentinel set:

        redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db][?sentinel_password=...]

    (`rediss+sentinel://` for TLS to the master.) The client asks the Sentinels for the master
    on connecting and again after a failover (redis-py's SentinelConnectionPool): while none is
    known every command raises a ConnectionError, a 503, and it recovers without a restart."""
    if not url.startswith(SENTINEL_SCHEMES):
        return redis.Redis.from_url(url, **options)
    sentinels, service, db, auth, sentinel_auth, tls = parse_sentinel_url(url)
    timeouts = {name: options[name] for name in ("socket_timeout", "socket_connect_timeout") if name in options}
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        sentinels, sentinel_kwargs={**timeouts, **sentinel_auth}, **timeouts)
    master = sentinel.master_for(service, db=db, ssl=tls, **auth, **options)  # type: ignore[no-untyped-call]
    return cast(redis.Redis, master)


def init_redis(app: Flask) -> None:
    """One pooled client per process; redis-py's pool reconnects after fork and after an outage
    (and, with a Sentinel URL, finds the new master after a failover)."""
    timeout = app.config["REDIS_TIMEOUT_SECONDS"]
    app.extensions["redis"] = redis_from_url(
        app.config["REDIS_URL"],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def get_redis() -> redis.Redis:
    return cast(redis.Redis, current_app.extensions["redis"])


def redis_script(source: str) -> Any:
    """A registered Lua script on this app's Redis (EVALSHA, loaded on first use)."""
    scripts = current_app.extensions.setdefault("redis_scripts", {})
    if source not in scripts:
        scripts[source] = get_redis().register_script(source)
    return scripts[source]


def redis_eviction_warning(url: str, cache_url: str) -> str | None:
    """Why this Redis is unsafe for revocation state, or None (also when it cannot be asked:
    managed services often forbid CONFIG)."""
    if url == cache_url:
        return ("REDIS_URL and CACHE_REDIS_URL name the same Redis: cache data can crowd out "
                "revocation state; give the cache a Redis of its own")
    try:
        policy = redis_from_url(url, socket_timeout=1, socket_connect_timeout=1).config_get(
            "maxmemory-policy").get("maxmemory-policy")
    except redis.RedisError:
        return None
    if policy and policy != "noeviction":
        return (f"REDIS_URL's Redis has maxmemory-policy {policy}: it may evict sessions and "
                "revocations under memory pressure; set it to noeviction")
    return None
