"""Fixtures: real SecantusDB and Redis processes once per session, a clean database per test.

The layout mirrors the code: tests/services (services and models called directly),
tests/http (the API through the test client), tests/live (gunicorn and other real processes),
tests/project (config and deploy files), tests/e2e (Nginx in front, `make e2e`). Each test
is marked by its folder (`-m services`, `-m "not live"`, ...); shared helpers are in
tests/helpers.py (requests and assertions) and tests/servers.py (server processes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskapi import create_app
from taskapi.cli import migrate
from taskapi.extensions import get_db, get_redis
from tests.servers import MongoServer, RedisServer

SUITES = ("services", "http", "live", "project", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.path)).parent.name
        if folder in SUITES:
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def servers(log_dir):
    """MongoDB, Redis and cache-Redis URLs: TEST_MONGODB_URI / TEST_REDIS_URL / TEST_CACHE_REDIS_URL
    when set, else our own processes (the cache's with maxmemory and allkeys-lru, as deployed)."""
    started = []
    mongodb_uri = os.environ.get("TEST_MONGODB_URI")
    redis_url = os.environ.get("TEST_REDIS_URL")
    cache_url = os.environ.get("TEST_CACHE_REDIS_URL")
    if not mongodb_uri:
        started.append(MongoServer(log_dir).start())
        mongodb_uri = started[-1].uri
    if not redis_url:
        started.append(RedisServer(log_dir).start())
        redis_url = started[-1].url
    if not cache_url:
        started.append(RedisServer(log_dir, maxmemory="64mb", policy="allkeys-lru").start())
        cache_url = started[-1].url
    yield {"MONGODB_URI": mongodb_uri, "REDIS_URL": redis_url, "CACHE_REDIS_URL": cache_url}
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session")
def app_env(servers):
    """Environment for apps under test, in this process and in gunicorn children."""
    # Cheap argon2 keeps the suite fast; tests about hashing cost build apps with real parameters.
    env = {"TASKAPI_ENV": "testing", "JWT_SECRET_KEY": "test-secret-" + "k" * 40,
           "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "8192", "ARGON2_PARALLELISM": "1",
           # Webhook receivers in tests listen on loopback over plain HTTP; schedules are short.
           "WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
           "WEBHOOK_RETRY_SCHEDULE": "1s,1s,1s", "WEBHOOK_TIMEOUT_SECONDS": "2", "WEBHOOK_DISABLE_AFTER": "10s",
           "REMINDER_MAX_DELAY_SECONDS": "2", "WORKER_POLL_MS": "100", **servers}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def app(app_env):
    application = create_app("testing")
    with application.app_context():
        migrate.upgrade(get_db())
    return application


@pytest.fixture(autouse=True)
def clean_state(request):
    """Each test starts with empty collections (indexes kept) and an empty Redis."""
    if "app" not in request.fixturenames:
        yield
        return
    application = request.getfixturevalue("app")
    with application.app_context():
        db = get_db()
        for name in db.list_collection_names():
            if not name.startswith(("_migrations", "system.")):
                db[name].delete_many({})
        get_redis().flushdb()
        application.extensions["cache_redis"].flushdb()
    yield


@pytest.fixture
def mongodb_indexes(app):
    """The eleven ESR task indexes MongoDB has (SecantusDB keeps one), for tests of MongoDB's plan."""
    from taskapi.models import create_declared_indexes
    from taskapi.models.task import EMBEDDED_TASK_INDEXES, Task

    with app.app_context():
        tasks = get_db().tasks
        created = create_declared_indexes(tasks, Task)
    yield
    with app.app_context():
        for name in created:
            if name not in EMBEDDED_TASK_INDEXES:
                get_db().tasks.drop_index(name)


@pytest.fixture
def sink(tmp_path):
    """A real SMTP server on loopback (the development sink) keeping what it receives."""
    from taskapi.runtime.mailsink import MailSink

    with MailSink(tmp_path / "mail") as running:
        yield running


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def make_app(app, monkeypatch):
    """Build another app against other servers; MongoEngine's one `default` connection is
    rebound to the session app afterwards, so later tests talk to the session servers."""
    from taskapi.extensions import init_mongo

    def factory(**env: str):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return create_app("testing")

    yield factory
    init_mongo(app)


@pytest.fixture
def user_tokens(client):
    """A registered user logged in through the API (never an auth-off switch)."""
    from tests.helpers import login, register

    register(client, "ada@example.com")
    return login(client, "ada@example.com")


@pytest.fixture
def admin_tokens(app, client):
    """An admin made by the CLI command, logged in through the API."""
    from tests.helpers import PASSWORD, login

    result = app.test_cli_runner().invoke(
        args=["users", "create-admin", "--email", "root@example.com", "--password", PASSWORD])
    assert result.exit_code == 0, result.output
    return login(client, "root@example.com")

# The end-to-end suite (Nginx in front of gunicorn, faults injected) runs with `make e2e`.
collect_ignore = [] if os.environ.get("TASKAPI_E2E") else ["e2e"]
