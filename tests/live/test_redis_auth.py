"""Redis with a password and an ACL user (as docker-compose.yml runs it), and over TLS (rediss://)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from taskapi.runtime import devserver
from tests.helpers import assert_problem, bearer, login, register

ACL = """user default off
user taskapi on >s3cret-redis-pass ~taskapi:* ~LIMITS:* &* +@all -@dangerous +info +ping
"""


def start_acl_redis(tmp_path: Path, binary: str | None = None, extra: list[str] | None = None):
    port = devserver.free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\n" + ACL)
    process = subprocess.Popen([binary or devserver.redis_server_binary(), str(conf), *(extra or [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return port, process


def test_an_acl_user_with_a_password_is_all_the_app_needs(make_app, tmp_path):
    port, process = start_acl_redis(tmp_path)
    url = f"redis://taskapi:s3cret-redis-pass@127.0.0.1:{port}/0"
    try:
        devserver.wait_until(lambda: redis.Redis.from_url(url).ping(), process, "Redis")
        client = make_app(REDIS_URL=url).test_client()
        register(client, "acl@example.com")
        tokens = login(client, "acl@example.com")
        headers = bearer(tokens["access_token"])
        assert client.post("/api/v1/tasks", json={"title": "t"}, headers=headers).status_code == 201
        assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
        assert client.get("/api/v1/auth/me", headers=headers).status_code == 401
        keys = {key.split(b":")[0] for key in redis.Redis.from_url(url).scan_iter("*")}
        assert keys <= {b"taskapi", b"LIMITS"}, keys  # the ACL's key patterns cover everything written
        wrong = make_app(REDIS_URL=f"redis://taskapi:wrong@127.0.0.1:{port}/0").test_client()
        assert_problem(wrong.get("/api/v1/auth/me", headers=headers), 503)
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.skipif(shutil.which("openssl") is None or not Path("/usr/bin/redis-server").exists(),
                    reason="needs openssl and Debian's redis-server (built with TLS)")
def test_rediss_urls_work(make_app, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    tls_port = devserver.free_port()
    port, process = start_acl_redis(tmp_path, "/usr/bin/redis-server",
                                    ["--port", "0", "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                                     "--tls-auth-clients", "no"])
    url = f"rediss://taskapi:s3cret-redis-pass@127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}&ssl_cert_reqs=required"
    try:
        devserver.wait_until(lambda: redis.Redis.from_url(url).ping(), process, "Redis (TLS)")
        client = make_app(REDIS_URL=url, CACHE_REDIS_URL=url).test_client()
        register(client, "tls@example.com")
        headers = bearer(login(client, "tls@example.com")["access_token"])
        assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
        client.get("/api/v1/tasks", headers=headers)
        assert client.get("/api/v1/tasks", headers=headers).headers["X-Cache"] == "HIT"
    finally:
        process.terminate()
        process.wait(10)
