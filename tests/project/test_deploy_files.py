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


def test_boot_script_migrates_then_execs_gunicorn():
    lines = [line for line in (ROOT / "boot.sh").read_text().splitlines() if line and not line.startswith("#")]
    assert lines == ["set -e", "flask --app wsgi db upgrade", "exec gunicorn -c gunicorn.conf.py wsgi:app"]
    assert (ROOT / "boot.sh").stat().st_mode & 0o111


def test_dockerignore_keeps_secrets_and_junk_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", ".env", "tests"} <= ignored


def test_compose_wires_mongo_two_redis_rabbitmq_app_worker_and_nginx():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"mongo", "redis", "cache", "rabbitmq", "app", "worker", "nginx"}
    redis_cmd, cache_cmd = services["redis"]["command"], services["cache"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert cache_cmd[cache_cmd.index("--maxmemory-policy") + 1] == "allkeys-lru" and "--maxmemory" in cache_cmd
    for command in (redis_cmd, cache_cmd):  # no anonymous access: the default user is off, one ACL user
        assert " ".join(command).count("--user default off") == 1
        password = next(arg for arg in command if arg.startswith(">"))
        assert password.startswith(">${") and ":?" in password, "a password from the environment, no default"
    app = services["app"]
    assert set(app["environment"]) <= CONFIG_NAMES, set(app["environment"]) - CONFIG_NAMES
    assert app["environment"]["TASKAPI_ENV"] == "production" and app["environment"]["TRUSTED_PROXY_COUNT"] == "1"
    assert app["environment"]["MONGODB_URI"].startswith("mongodb://mongo:")
    assert app["environment"]["REDIS_URL"].startswith("redis://taskapi:${REDIS_PASSWORD}@redis:")
    assert app["environment"]["CACHE_REDIS_URL"].startswith("redis://taskapi:${CACHE_REDIS_PASSWORD}@cache:")
    assert "${JWT_SECRET_KEY:?" in app["environment"]["JWT_SECRET_KEY"], "no default secret"
    assert app["expose"] == ["8000"] and app["environment"]["PORT"] == "8000"
    # A task and its events are written in one transaction (the outbox): MongoDB must be a replica set.
    assert "--replSet" in services["mongo"]["command"] and "replicaSet=" in app["environment"]["MONGODB_URI"]
    # The worker: the app's image and environment plus the broker (which the API never uses).
    worker = services["worker"]
    assert worker["build"] == app["build"] and worker["command"] == ["flask", "--app", "wsgi", "worker"]
    assert set(worker["environment"]) <= CONFIG_NAMES, set(worker["environment"]) - CONFIG_NAMES
    for name in ("TASKAPI_ENV", "MONGODB_URI", "REDIS_URL", "CACHE_REDIS_URL", "JWT_SECRET_KEY"):
        assert worker["environment"][name] == app["environment"][name], name
    assert worker["environment"]["BROKER_URL"].startswith("amqp://${RABBITMQ_USER}:${RABBITMQ_PASSWORD}@rabbitmq:")
    assert "BROKER_URL" not in app["environment"]
    assert {"mongo", "redis", "cache", "rabbitmq"} <= set(worker["depends_on"])
    from config import get_config, parse_duration

    assert parse_duration(worker["stop_grace_period"]) > get_config("testing").WEBHOOK_TIMEOUT_SECONDS
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
    assert set(nginx["networks"]) == {"edge", "backend"}
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert any(port.endswith(":80") for port in nginx["ports"])
    assert "/healthz" in " ".join(nginx["healthcheck"]["test"])
    # nginx.conf routes to an auth and a tasks upstream, re-resolving their replicas (`resolve`:
    # open-source nginx >= 1.27.3); in the monolith the app service answers to both names.
    conf = (ROOT / "nginx.conf").read_text()
    assert "server auth:8000 resolve;" in conf and "server tasks:8000 resolve;" in conf
    assert re.search(r"^\s+resolver 127\.0\.0\.11 valid=\d+s", conf, re.M)
    assert services["app"]["networks"]["backend"]["aliases"] == ["auth", "tasks"]
    major, minor = map(int, re.match(r"nginx:(\d+)\.(\d+)", nginx["image"]).groups())
    assert (major, minor) >= (1, 28), nginx["image"]


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
