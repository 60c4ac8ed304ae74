"""The deployment files (Docker cannot run here): their essentials agree with the app's config."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from config import ROOT
from tests.servers import NginxServer

CONFIG_NAMES = set(re.findall(r'env_(?:str|int|bool|list)\("([A-Z_]+)"', (ROOT / "config.py").read_text()))


def test_dockerfile_is_multi_stage_non_root_with_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2, "build stage + slim runtime stage"
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "a numeric, non-root uid:gid (hadolint DL3066)"
    uid = users[-1].split(":")[0]
    assert f"--uid {uid}" in text and all(f"--chown={uid}:" in line for line in re.findall(r"^COPY --chown.*", text, re.M))
    healthcheck = re.search(r"^HEALTHCHECK .*?(?=^\S)", text, re.M | re.S).group(0)
    assert "/healthz" in healthcheck and "os.environ.get('PORT', '8000')" in healthcheck, "follows PORT"
    assert re.search(r"^EXPOSE 8000$", text, re.M)
    assert re.search(r'^CMD \["\./boot\.sh"\]$', text, re.M)
    for source in re.findall(r"^COPY --chown=\S+ (.+) \S+$", text, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), f"Dockerfile copies {name}, which is missing"
    env_names = set(re.findall(r"\b([A-Z_]+)=", text.split("FROM python:3.11-slim\n", 2)[-1]))
    assert {"TASKAPI_ENV", "HOST", "PORT", "TRUSTED_PROXY_COUNT"} <= env_names
    assert env_names - {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"} <= CONFIG_NAMES


def test_boot_script_migrates_makes_a_first_key_then_execs_gunicorn(app, tmp_path):
    """boot.sh for real, as the auth service's container runs it: migrations, a first RS256 key
    into an empty JWT_PRIVATE_KEYS, then gunicorn (the same process) serving that key's JWK set;
    a second boot keeps the key it finds."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import requests

    from taskapi.runtime.devserver import free_port

    assert (ROOT / "boot.sh").stat().st_mode & 0o111
    keys, port = tmp_path / "keys", free_port()
    env = {**os.environ, "TASKAPI_ENV": "testing", "TASKAPI_SERVICE": "auth", "JWT_ALGORITHM": "RS256",
           "JWT_PRIVATE_KEYS": str(keys), "MONGODB_URI": app.config["MONGODB_URI"], "REDIS_URL": app.config["REDIS_URL"],
           "CACHE_REDIS_URL": app.config["CACHE_REDIS_URL"], "PORT": str(port), "WORKERS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    kids = []
    for _ in range(2):
        process = subprocess.Popen(["./boot.sh"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    answer = requests.get(f"http://127.0.0.1:{port}/.well-known/jwks.json", timeout=2)
                    break
                except requests.ConnectionError:
                    assert process.poll() is None and time.monotonic() < deadline, process.stdout.read().decode()
                    time.sleep(0.2)
            kids.append([key["kid"] for key in answer.json()["keys"]])
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
    assert len(kids[0]) == 1 and kids[1] == kids[0]  # made once, then kept
    assert len(list(keys.glob("*.pem"))) == 1


def test_dockerignore_keeps_secrets_and_junk_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", ".env", "tests"} <= ignored


def test_compose_runs_auth_and_tasks_each_with_its_database_workers_rabbitmq_redis_and_nginx():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"mongo", "redis", "cache", "rabbitmq", "auth", "tasks", "worker", "auth-worker", "nginx"}
    redis_cmd, cache_cmd = services["redis"]["command"], services["cache"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert cache_cmd[cache_cmd.index("--maxmemory-policy") + 1] == "allkeys-lru" and "--maxmemory" in cache_cmd
    for command in (redis_cmd, cache_cmd):  # no anonymous access: the default user is off, one ACL user
        assert " ".join(command).count("--user default off") == 1
        password = next(arg for arg in command if arg.startswith(">"))
        assert password.startswith(">${") and ":?" in password, "a password from the environment, no default"
    auth, tasks = services["auth"], services["tasks"]
    for service in (auth, tasks):
        env = service["environment"]
        assert set(env) <= CONFIG_NAMES, set(env) - CONFIG_NAMES
        assert env["TASKAPI_ENV"] == "production" and env["TRUSTED_PROXY_COUNT"] == "1"
        assert env["REDIS_URL"].startswith("redis://taskapi:${REDIS_PASSWORD}@redis:")
        assert env["CACHE_REDIS_URL"].startswith("redis://taskapi:${CACHE_REDIS_PASSWORD}@cache:")
        assert "${JWT_SECRET_KEY:?" in env["JWT_SECRET_KEY"], "no default secret"
        assert service["expose"] == ["8000"] and env["PORT"] == "8000" and env["JWT_ALGORITHM"] == "RS256"
        # A task and its events are written in one transaction (the outbox): MongoDB must be a replica set.
        assert env["MONGODB_URI"].startswith("mongodb://mongo:") and "replicaSet=" in env["MONGODB_URI"]
        assert "BROKER_URL" not in env  # the API never talks to the broker
        assert int(env["WORKERS"]) >= 1 and int(env["THREADS"]) >= 1  # gunicorn settings per service
    assert "--replSet" in services["mongo"]["command"]
    assert auth["deploy"]["replicas"] >= 2 and tasks["deploy"]["replicas"] >= 2  # several instances per service
    # Each service its own database; only auth holds the signing keys, tasks verifies with its JWK set.
    assert auth["environment"]["TASKAPI_SERVICE"] == "auth" and tasks["environment"]["TASKAPI_SERVICE"] == "tasks"
    assert auth["environment"]["MONGODB_URI"].split("?")[0].endswith("/taskapi_auth")
    assert tasks["environment"]["MONGODB_URI"].split("?")[0].endswith("/taskapi")  # the monolith's, kept
    assert auth["environment"]["JWT_PRIVATE_KEYS"] == "/app/keys" and "jwt-keys:/app/keys" in auth["volumes"]
    assert "JWT_PRIVATE_KEYS" not in tasks["environment"] and "volumes" not in tasks
    assert tasks["environment"]["JWKS_URL"] == "http://auth:8000/.well-known/jwks.json"
    # The workers: the image and environment of their service plus the broker and mail.
    for name, service in (("worker", tasks), ("auth-worker", auth)):
        worker = services[name]
        assert worker["build"] == service["build"] and worker["command"] == ["flask", "--app", "wsgi", "worker"]
        assert set(worker["environment"]) <= CONFIG_NAMES, set(worker["environment"]) - CONFIG_NAMES
        for setting in ("TASKAPI_ENV", "TASKAPI_SERVICE", "MONGODB_URI", "REDIS_URL", "CACHE_REDIS_URL", "JWT_SECRET_KEY"):
            assert worker["environment"][setting] == service["environment"][setting], (name, setting)
        assert worker["environment"]["BROKER_URL"].startswith("amqp://${RABBITMQ_USER}:${RABBITMQ_PASSWORD}@rabbitmq:")
        assert {"mongo", "redis", "cache", "rabbitmq"} <= set(worker["depends_on"])
        from config import get_config, parse_duration

        assert parse_duration(worker["stop_grace_period"]) > get_config("testing").WEBHOOK_TIMEOUT_SECONDS
    assert services["auth-worker"]["volumes"] == ["jwt-keys:/app/keys:ro"]
    rabbit = services["rabbitmq"]
    for name in ("RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"):
        assert rabbit["environment"][name].startswith("${") and ":?" in rabbit["environment"][name], name
    assert "rabbitmq-diagnostics" in rabbit["healthcheck"]["test"]
    # Only Nginx is published; everything else is on the internal network only.
    assert compose["networks"]["backend"]["internal"] is True
    for name, service in services.items():
        if name != "nginx":
            assert "ports" not in service and list(service["networks"]) == ["backend"], name
    nginx = services["nginx"]
    assert set(nginx["networks"]) == {"edge", "backend"} and {"auth", "tasks"} <= set(nginx["depends_on"])
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert any(port.endswith(":80") for port in nginx["ports"])
    assert "/healthz" in " ".join(nginx["healthcheck"]["test"])
    # nginx.conf routes to the auth and the tasks upstream by their service names, re-resolving
    # their replicas (`resolve`: open-source nginx >= 1.27.3).
    conf = (ROOT / "nginx.conf").read_text()
    assert "server auth:8000 resolve max_fails=2" in conf and "server tasks:8000 resolve max_fails=2" in conf
    # Several replicas per service: failed ones left out (passive checks); only idempotent
    # requests go to the next replica (never `non_idempotent`).
    assert "proxy_next_upstream error timeout;" in conf
    assert not re.search(r"^[^#]*proxy_next_upstream[^;#]*non_idempotent", conf, re.M)
    assert re.search(r"^\s+resolver 127\.0\.0\.11 valid=\d+s", conf, re.M)
    major, minor = map(int, re.match(r"nginx:(\d+)\.(\d+)", nginx["image"]).groups())
    assert (major, minor) >= (1, 28), nginx["image"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "install -d -o 10001 -g 10001 -m 0700 /app/keys" in dockerfile  # the keys volume's owner and mode


def test_nginx_conf_matches_the_app():
    text = (ROOT / "nginx.conf").read_text()
    assert "server_tokens off;" in text
    body_limit = re.search(r"client_max_body_size (\d+)k;", text).group(1)
    from config import get_config

    assert int(body_limit) * 1024 == get_config("testing").MAX_CONTENT_LENGTH
    for header in ("X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme",
                   "X-Request-ID $taskapi_request_id"):
        assert f"proxy_set_header {header};" in text
    for status in (413, 502, 504):
        assert re.search(rf"error_page {status} @problem_{status};", text)
        assert re.search(rf"return {status} '\{{\"type\":\"about:blank\".*\"status\":{status}", text)
    assert "keepalive 32;" in text and "gzip_types application/json application/problem+json;" in text


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is installed by `make e2e`, which runs nginx -t too")
def test_nginx_conf_passes_nginx_t():
    result = NginxServer("127.0.0.1:9", Path(tempfile.mkdtemp())).check()
    assert result.returncode == 0, result.stderr
