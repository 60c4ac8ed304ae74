"""The split deployment behind the repo's Nginx: an auth service and a tasks service as separate
gunicorn instances (TASKAPI_SERVICE=auth|tasks, RS256, the tasks service verifying with the auth
service's JWKS_URL), sharing the Redis revocation state; nginx.conf routes /api/v1/auth,
/api/v1/users and /.well-known/ to auth and the rest to tasks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from config import ROOT
from taskapi.runtime import devserver
from tests.servers import GunicornServer, MongoServer, NginxServer, RedisServer

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    work = tmp_path_factory.mktemp("split")
    mongo = MongoServer(work, storage=str(work / "db")).start()
    state = RedisServer(work, directory=work / "redis").start()
    cache = RedisServer(work, maxmemory="64mb", policy="allkeys-lru").start()
    devserver.apply_migrations(mongo.uri)
    base_env = {"TASKAPI_ENV": "testing", "MONGODB_URI": mongo.uri, "REDIS_URL": state.url,
                "CACHE_REDIS_URL": cache.url, "JWT_SECRET_KEY": "split-secret-" + "s" * 40,
                "TRUSTED_PROXY_COUNT": "1", "JWT_ALGORITHM": "RS256", "RATELIMIT_DEFAULT": "100000/minute",
                "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "8192", "ARGON2_PARALLELISM": "1"}
    keys = work / "keys"
    auth_env = {**base_env, "TASKAPI_SERVICE": "auth", "JWT_PRIVATE_KEYS": str(keys)}
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "keys", "rotate"], cwd=ROOT,
                   env={**os.environ, **auth_env}, check=True, capture_output=True)
    auth = GunicornServer(auth_env, workers=2, log_path=work / "auth.log").start()
    tasks_env = {**base_env, "TASKAPI_SERVICE": "tasks", "JWT_PRIVATE_KEYS": "",
                 "JWKS_URL": f"{auth.base}/.well-known/jwks.json"}
    tasks = GunicornServer(tasks_env, workers=3, log_path=work / "tasks.log").start()
    nginx = NginxServer(f"127.0.0.1:{tasks.port}", work / "nginx", auth_upstream=f"127.0.0.1:{auth.port}")
    check = nginx.check()
    assert check.returncode == 0, check.stderr
    nginx.start()
    try:
        yield {"base": nginx.base, "auth": auth, "tasks": tasks}
    finally:
        nginx.stop()
        tasks.stop()
        auth.stop()
        for server in (cache, state, mongo):
            server.stop()


def test_the_whole_flow_through_nginx_across_the_two_services(split):
    api = split["base"] + "/api/v1"
    session = requests.Session()
    created = session.post(f"{api}/auth/register", json={"email": "ada@example.com", "password": PASSWORD}, timeout=10)
    assert created.status_code == 201, created.text
    pair = session.post(f"{api}/auth/login", json={"email": "ada@example.com", "password": PASSWORD}, timeout=10).json()
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    keys = session.get(split["base"] + "/.well-known/jwks.json", timeout=10)
    assert keys.status_code == 200 and keys.json()["keys"][0]["alg"] == "RS256"
    task = session.post(f"{api}/tasks", json={"title": "Across services"}, headers=auth, timeout=10)
    assert task.status_code == 201, task.text
    assert session.get(f"{api}/tasks/{task.json()['id']}", headers=auth, timeout=10).status_code == 200
    assert session.get(f"{api}/stats/dashboard", headers=auth, timeout=10).json()["total"] == 1
    assert session.get(f"{api}/auth/me", headers=auth, timeout=10).json()["email"] == "ada@example.com"
    # Logout at the auth service: every tasks worker refuses the token on its next request.
    assert session.post(f"{api}/auth/logout", headers=auth, timeout=10).status_code == 204
    refused = [session.get(f"{api}/tasks", headers=auth, timeout=10).status_code for _ in range(9)]
    assert refused == [401] * 9


def test_each_service_answers_only_for_its_own_routes(split):
    tasks_base, auth_base = split["tasks"].base, split["auth"].base
    assert requests.post(f"{tasks_base}/api/v1/auth/login", json={}, timeout=10).status_code == 404
    assert requests.get(f"{auth_base}/api/v1/tasks", timeout=10).status_code == 404
    tasks_spec = requests.get(f"{tasks_base}/openapi.json", timeout=10).json()["paths"]
    auth_spec = requests.get(f"{auth_base}/openapi.json", timeout=10).json()["paths"]
    assert all(not path.startswith(("/api/v1/auth", "/api/v1/users", "/.well-known")) for path in tasks_spec)
    assert all(not path.startswith(("/api/v1/tasks", "/api/v1/stats", "/api/v1/webhooks")) for path in auth_spec)


def test_with_the_auth_service_stopped_the_tasks_service_keeps_serving_issued_tokens(split):
    api = split["base"] + "/api/v1"
    requests.post(f"{api}/auth/register", json={"email": "bo@example.com", "password": PASSWORD}, timeout=10)
    token = requests.post(f"{api}/auth/login", json={"email": "bo@example.com", "password": PASSWORD},
                          timeout=10).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    split["auth"].stop()
    try:
        assert [requests.get(f"{api}/tasks", headers=auth, timeout=10).status_code for _ in range(6)] == [200] * 6
        down = requests.post(f"{api}/auth/login", json={"email": "bo@example.com", "password": PASSWORD}, timeout=10)
        assert down.status_code in (502, 503) and down.headers["Content-Type"] == "application/problem+json"
    finally:
        split["auth"].start()
    again = requests.post(f"{api}/auth/login", json={"email": "bo@example.com", "password": PASSWORD}, timeout=10)
    assert again.status_code == 200  # no restart of the tasks service needed
    fresh = {"Authorization": f"Bearer {again.json()['access_token']}"}
    assert requests.get(f"{api}/tasks", headers=fresh, timeout=10).status_code == 200
