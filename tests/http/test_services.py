"""One codebase, three roles (TASKAPI_SERVICE): what each serves, and the tasks service verifying
RS256 tokens with the auth service's JWK set (JWKS_URL) over a real socket: cached, fetched
again for an unknown kid, kept working while the auth service is down."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import jwt
import pytest
from werkzeug.serving import make_server

from config import ConfigError
from taskapi.runtime.devserver import free_port
from tests.helpers import assert_problem, bearer, login, register

AUTH_PATHS = ("/api/v1/auth/login", "/api/v1/users", "/.well-known/jwks.json")
TASK_PATHS = ("/api/v1/tasks", "/api/v1/stats/dashboard", "/api/v1/webhooks")


@contextmanager
def serving(app) -> Iterator[str]:
    """The app on a loopback port (a real HTTP server in a thread); yields its base URL."""
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def spec_paths(client) -> set[str]:
    return set(client.get("/openapi.json").get_json()["paths"])


@pytest.mark.parametrize(("service", "served", "refused"), [
    ("auth", AUTH_PATHS, TASK_PATHS), ("tasks", TASK_PATHS, AUTH_PATHS),
])
def test_each_service_serves_its_own_routes_and_404s_the_others(make_app, service, served, refused):
    client = make_app(TASKAPI_SERVICE=service).test_client()
    for path in served:
        assert client.get(path).status_code != 404, path
        assert any(p.startswith(path.rsplit("/", 1)[0]) for p in spec_paths(client)), path
    for path in refused:
        assert_problem(client.get(path), 404)
        assert path not in spec_paths(client)
    for shared in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert client.get(shared).status_code == 200, shared


def test_the_monolith_serves_everything(client):
    for path in AUTH_PATHS + TASK_PATHS:
        assert client.get(path).status_code != 404, path


def test_settings_are_checked(make_app):
    with pytest.raises(ConfigError, match="TASKAPI_SERVICE"):
        make_app(TASKAPI_SERVICE="billing")
    with pytest.raises(ConfigError, match="JWKS_URL needs JWT_ALGORITHM=RS256 or ES256"):
        make_app(TASKAPI_SERVICE="tasks", JWKS_URL="http://127.0.0.1:1/.well-known/jwks.json")
    with pytest.raises(ConfigError, match="JWKS_URL is for TASKAPI_SERVICE=tasks"):
        make_app(TASKAPI_SERVICE="all", JWT_ALGORITHM="RS256", JWKS_URL="http://127.0.0.1:1/.well-known/jwks.json")


@pytest.fixture
def auth_service(make_app, tmp_path):
    """An RS256 auth service with one key, served on a socket; yields (app, base URL, key folder)."""
    folder = tmp_path / "keys"
    settings = {"TASKAPI_SERVICE": "auth", "JWT_ALGORITHM": "RS256", "JWT_PRIVATE_KEYS": str(folder), "JWKS_URL": "",
                "JWT_KEY_ACTIVATION_SECONDS": "0"}
    result = make_app(**settings).test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    app = make_app(**settings)
    return app, folder, settings


def token_at(auth_app, email: str) -> str:
    """A new account at the auth service and its access token."""
    register(auth_app.test_client(), email)
    return login(auth_app.test_client(), email)["access_token"]


def tasks_service(make_app, base: str, **extra):
    return make_app(TASKAPI_SERVICE="tasks", JWT_ALGORITHM="RS256", JWT_PRIVATE_KEYS="",
                    JWKS_URL=f"{base}/.well-known/jwks.json", **extra)


def test_the_tasks_service_verifies_with_the_auth_services_keys_and_revocation(make_app, auth_service):
    auth_app, _, _ = auth_service
    auth = auth_app.test_client()
    register(auth, "ada@example.com")
    pair = login(auth, "ada@example.com")
    with serving(auth_app) as base:
        tasks = tasks_service(make_app, base).test_client()
    created = tasks.post("/api/v1/tasks", json={"title": "Split"}, headers=bearer(pair["access_token"]))
    assert created.status_code == 201, created.get_data(as_text=True)
    assert tasks.get("/.well-known/jwks.json").status_code == 404  # the auth service publishes the keys
    # Logout at the auth service: the tasks service refuses the token on its next request.
    assert auth.post("/api/v1/auth/logout", headers=bearer(pair["access_token"])).status_code == 204
    assert tasks.get("/api/v1/tasks", headers=bearer(pair["access_token"])).status_code == 401
    # A token signed by a key the auth service never published is refused.
    forged = jwt.encode(jwt.decode(login(auth, "ada@example.com")["access_token"], options={"verify_signature": False}),
                        _other_key(), algorithm="RS256", headers={"kid": "made-up"})
    assert_problem(tasks.get("/api/v1/tasks", headers=bearer(forged)), 401)


def _other_key():
    from taskapi.services.keys import new_private_key

    return new_private_key("RS256")


def test_with_the_auth_service_down_issued_tokens_keep_working(make_app, auth_service):
    auth_app, _, _ = auth_service
    auth = auth_app.test_client()
    register(auth, "bo@example.com")
    access = login(auth, "bo@example.com")["access_token"]
    with serving(auth_app) as base:
        running = tasks_service(make_app, base).test_client()
    # The auth service is down now: the process that fetched the keys goes on, and one that
    # starts now verifies with the set kept in Redis.
    assert running.get("/api/v1/tasks", headers=bearer(access)).status_code == 200
    started_later = tasks_service(make_app, base).test_client()
    assert started_later.get("/api/v1/tasks", headers=bearer(access)).status_code == 200
    assert_problem(auth.application.test_client().get("/api/v1/tasks"), 404)  # (the auth app has no tasks)


class Reloadable:
    """A WSGI app that can be swapped under a running server: a reload of the auth service."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


def test_a_new_key_at_the_auth_service_is_fetched_on_its_first_token(make_app, auth_service):
    auth_app, _, settings = auth_service
    old = token_at(auth_app, "cy@example.com")
    auth = Reloadable(auth_app)
    with serving(auth) as base:
        eager = tasks_service(make_app, base, JWKS_REFETCH_SECONDS="1").test_client()
        throttled = tasks_service(make_app, base, JWKS_REFETCH_SECONDS="3600").test_client()
        rotated = auth_app.test_cli_runner().invoke(args=["keys", "rotate"])
        assert rotated.exit_code == 0, rotated.output
        auth.app = make_app(**settings)  # the auth service reloads: it signs with the new key
        new = login(auth.app.test_client(), "cy@example.com")["access_token"]
        assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
        for tasks in (eager, throttled):
            assert tasks.get("/api/v1/tasks", headers=bearer(old)).status_code == 200
        time.sleep(1.1)  # JWKS_REFETCH_SECONDS since the eager service's first fetch
        assert eager.get("/api/v1/tasks", headers=bearer(new)).status_code == 200  # unknown kid: fetched again
        # At most one fetch per JWKS_REFETCH_SECONDS: made-up kids cannot make it fetch on every request.
        assert throttled.get("/api/v1/tasks", headers=bearer(new)).status_code == 401


def answering(body: bytes, delay: float = 0.0):
    """A WSGI app standing in for a broken or slow auth service: always this body."""
    def app(environ, start_response):
        time.sleep(delay)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return app


def test_a_garbled_or_empty_jwk_set_changes_nothing_and_breaks_no_start(make_app, auth_service):
    auth_app, _, _ = auth_service
    token = token_at(auth_app, "gi@example.com")
    with serving(auth_app) as base:
        tasks_service(make_app, base)  # a good fetch: the set is kept in Redis too
    for broken in (b"[" * 100_000, b"not json", b'{"keys": []}', b'{"keys": [{"kty": "RSA", "kid": "x"}]}'):
        with serving(answering(broken)) as base:
            started = tasks_service(make_app, base, JWKS_REFETCH_SECONDS="1").test_client()  # starts all the same
            assert started.get("/api/v1/tasks", headers=bearer(token)).status_code == 200  # the Redis copy
            time.sleep(1.1)
            unknown = jwt.encode({"sub": "x"}, _other_key(), algorithm="RS256", headers={"kid": "new"})
            assert_problem(started.get("/api/v1/tasks", headers=bearer(unknown)), 401)  # fetched: nothing usable
            assert started.get("/api/v1/tasks", headers=bearer(token)).status_code == 200  # the keys stay


def test_no_request_waits_for_a_slow_jwk_set(make_app, auth_service):
    auth_app, _, _ = auth_service
    token = token_at(auth_app, "sl@example.com")
    auth = Reloadable(auth_app)
    with serving(auth) as base:
        tasks = tasks_service(make_app, base, JWKS_REFETCH_SECONDS="1").test_client()
        time.sleep(1.1)
        auth.app = answering(b'{"keys": []}', delay=1.8)  # the auth service turns slow
        unknown = jwt.encode({"sub": "x"}, _other_key(), algorithm="RS256", headers={"kid": "made-up"})
        fetching = threading.Thread(target=tasks.get, args=("/api/v1/tasks",), kwargs={"headers": bearer(unknown)})
        fetching.start()
        time.sleep(0.3)  # that request is fetching now
        began = time.monotonic()
        assert_problem(tasks.get("/api/v1/tasks", headers=bearer(unknown)), 401)
        assert tasks.get("/api/v1/tasks", headers=bearer(token)).status_code == 200
        assert time.monotonic() - began < 1.0  # neither waited for the fetch in progress
        fetching.join()


def test_only_keys_the_local_ring_would_accept_are_taken_from_a_jwk_set():
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from taskapi.services import keys

    p384 = jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)
    short = jwt.algorithms.RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 1024).public_key(), as_dict=True)
    document = json.dumps({"keys": [{**p384, "kid": "p384", "alg": "ES256"},
                                    {**short, "kid": "rsa1024", "alg": "RS256"}]}).encode()
    assert keys.parse_jwks(document, "ES256") == {} and keys.parse_jwks(document, "RS256") == {}
