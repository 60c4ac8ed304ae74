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
    for command in (["db", "status"], ["seed", "--users", "1", "--tasks", "1"]):
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *command], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"MongoDB at mongodb://127.0.0.1:{mongo_port}/" in lines[0]
        assert f"Redis at redis://127.0.0.1:{redis_port}/0" in lines[0] and "make run" in lines[0]
