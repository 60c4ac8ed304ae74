"""`flask --app wsgi ...` commands follow the same configuration as `make run`, and say in one
line when a server they need is not there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from config import ROOT, Config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_default_urls_follow_the_embedded_ports(monkeypatch):
    for name in ("MONGODB_URI", "REDIS_URL", "CACHE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EMBEDDED_MONGODB_PORT", "37117")
    monkeypatch.setenv("EMBEDDED_REDIS_PORT", "7390")
    monkeypatch.setenv("EMBEDDED_CACHE_REDIS_PORT", "7391")
    config = Config()
    assert config.MONGODB_URI.startswith("mongodb://127.0.0.1:37117/taskapi?")
    assert (config.REDIS_URL, config.CACHE_REDIS_URL) == ("redis://127.0.0.1:7390/0", "redis://127.0.0.1:7391/0")


def test_a_command_without_its_servers_says_so_in_one_line(tmp_path):
    mongo_port, redis_port = free_port(), free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if k not in {"MONGODB_URI", "REDIS_URL", "CACHE_REDIS_URL"}}
    env.update({"TASKAPI_ENV": "development", "TASKAPI_VAR_DIR": str(tmp_path), "MONGODB_TIMEOUT_MS": "300",
                "EMBEDDED_MONGODB_PORT": str(mongo_port), "EMBEDDED_REDIS_PORT": str(redis_port)})
    for command, needs_redis in ((["db", "status"], False), (["seed", "--users", "1", "--tasks", "1"], True),
                                 (["users", "create-admin", "--email", "a@example.com"], True)):
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *command], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"MongoDB at mongodb://127.0.0.1:{mongo_port}/" in lines[0] and "make run" in lines[0]
        assert (f"Redis at redis://127.0.0.1:{redis_port}/0" in lines[0]) is needs_redis, lines[0]
        assert "Password" not in result.stdout  # no prompt before the check


def test_the_message_masks_passwords():
    from taskapi.cli import without_credentials

    assert without_credentials("redis://:secret@r:6379/0") == "redis://:***@r:6379/0"
    assert without_credentials("redis://secret@r:6379/0") == "redis://***@r:6379/0"
    assert without_credentials("rediss://taskapi:secret@r:6380/1") == "rediss://taskapi:***@r:6380/1"
    assert without_credentials("mongodb://127.0.0.1:27117/taskapi") == "mongodb://127.0.0.1:27117/taskapi"


def test_db_commands_need_mongodb_only(servers, tmp_path):
    """A deploy runs `db upgrade` before the app: a Redis that is briefly away must not stop it."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "CACHE_REDIS_URL"}}
    env.update({"TASKAPI_ENV": "development", "TASKAPI_VAR_DIR": str(tmp_path), "MONGODB_URI": servers["MONGODB_URI"],
                "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "status"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "0001_users" in result.stdout


def test_create_admin_asks_for_the_password_when_not_given(app, runner):
    result = runner.invoke(args=["users", "create-admin", "--email", "asked@example.com"],
                           input="correct horse battery\ncorrect horse battery\n")
    assert result.exit_code == 0, result.output
    assert "created admin asked@example.com" in result.output
