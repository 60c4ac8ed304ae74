"""The deployed shape on loopback: SecantusDB and Redis (both on disk), gunicorn with 3
workers and TRUSTED_PROXY_COUNT=1, Debian's Nginx with the repo's nginx.conf in front."""

from __future__ import annotations

import http.client
import itertools
import json
import shutil
from urllib.parse import urlparse

import pytest

from config import ROOT
from tests.servers import GunicornServer, NginxServer, deployed_datastores

PASSWORD = "correct horse battery"
RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (make e2e installs Debian's package)")
    work = tmp_path_factory.mktemp("e2e")
    mongo, cache, response_cache = deployed_datastores(work)
    env = {"TASKAPI_ENV": "testing", "MONGODB_URI": mongo.uri, "REDIS_URL": cache.url,
           "CACHE_REDIS_URL": response_cache.url,
           "JWT_SECRET_KEY": "e2e-secret-" + "e" * 40, "TRUSTED_PROXY_COUNT": "1",
           "RATELIMIT_LOGIN": "5/minute", "RATELIMIT_LOGIN_ACCOUNT": "100/minute", "RATELIMIT_DEFAULT": "100000/minute",
           "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "8192", "ARGON2_PARALLELISM": "1", "THREADS": "4"}
    app = GunicornServer(env, workers=3, log_path=work / "gunicorn.log").start()
    nginx = NginxServer(f"127.0.0.1:{app.port}", work / "nginx")
    check = nginx.check()
    assert check.returncode == 0, check.stderr
    nginx.start()
    try:
        yield {"mongo": mongo, "redis": cache, "app": app, "nginx": nginx, "base": nginx.base, "work": work}
    finally:
        nginx.stop()
        app.stop()
        response_cache.stop()
        cache.stop()
        mongo.stop()
        out = ROOT / "var" / "e2e-results.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(RESULTS, indent=2))
        print("\ne2e results:\n" + json.dumps(RESULTS, indent=2))


_clients = itertools.count(10)


def account(base: str, email: str) -> dict:
    """Register and log in from a loopback address of its own (127.0.2.n): every helper login
    is another real client to Nginx, so none of them spends another's login budget."""
    source = f"127.0.2.{next(_clients)}"
    url = urlparse(base)

    def post(path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10, source_address=(source, 0))
        conn.request("POST", path, body=json.dumps({"email": email, "password": PASSWORD}),
                     headers={"Content-Type": "application/json", "X-Forwarded-For": "10.20.30.40"})
        response = conn.getresponse()
        result = response.status, response.read()
        conn.close()
        return result

    post("/api/v1/auth/register")
    status, body = post("/api/v1/auth/login")
    assert status == 200, body
    return json.loads(body)
