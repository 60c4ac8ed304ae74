"""The embedded runner behind `make run`: serves, stops cleanly, keeps data, explains a busy port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymongo
import pytest
import requests

from config import ROOT
from taskapi.runtime import devserver
from tests.servers import descendants, wait_gone, wait_http


def start_runner(var_dir, ports):
    env = {k: v for k, v in os.environ.items()
           if k not in {"MONGODB_URI", "REDIS_URL", "CACHE_REDIS_URL", "JWT_SECRET_KEY", "SMTP_URL", "BROKER_URL"}}
    env.update(TASKAPI_ENV="development", TASKAPI_VAR_DIR=str(var_dir), WORKERS="2",
               EMBEDDED_MONGODB_PORT=str(ports["mongo"]), EMBEDDED_REDIS_PORT=str(ports["redis"]),
               EMBEDDED_CACHE_REDIS_PORT=str(ports["cache"]), EMBEDDED_SMTP_PORT=str(ports["smtp"]),
               PORT=str(ports["http"]))
    return subprocess.Popen([sys.executable, "-m", "taskapi.runtime.devserver"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def ports():
    return {"mongo": devserver.free_port(), "redis": devserver.free_port(), "cache": devserver.free_port(),
            "smtp": devserver.free_port(), "http": devserver.free_port()}


def test_runner_serves_stops_cleanly_and_keeps_data(tmp_path, ports):
    runner = start_runner(tmp_path, ports)
    base = f"http://127.0.0.1:{ports['http']}"
    try:
        wait_http(base + "/readyz", runner, timeout=60)
        assert requests.get(base + "/healthz", timeout=5).json() == {"status": "ok"}
        deadline = time.monotonic() + 20  # /readyz answers once one worker is up; the other may still boot
        while len(children := descendants(runner.pid)) < 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(children) >= 8  # SecantusDB, two Redis, the mail sink, the worker, gunicorn master and 2 workers
        # The worker and the mail sink are there: a reminder already due is emailed into var/mail.
        api = base + "/api/v1"
        credentials = {"email": "runner@example.com", "password": "correct horse battery"}
        requests.post(api + "/auth/register", json=credentials, timeout=10).raise_for_status()
        token = requests.post(api + "/auth/login", json=credentials, timeout=10).json()["access_token"]
        requests.post(api + "/tasks", json={"title": "Renew the passport", "remind_at": "2026-01-01T09:00:00Z"},
                      headers={"Authorization": f"Bearer {token}"}, timeout=10).raise_for_status()
        deadline = time.monotonic() + 20
        while not list((tmp_path / "mail").glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.2)
        (letter,) = (tmp_path / "mail").glob("*.eml")
        assert "Subject: Reminder: Renew the passport" in letter.read_text()
        with pymongo.MongoClient(devserver.mongo_uri(ports["mongo"])) as client:
            client.taskapi.notes.insert_one({"_id": "kept", "text": "survives a restart"})
    finally:
        runner.send_signal(signal.SIGTERM)
        output = runner.communicate(timeout=40)[0]
    assert runner.returncode == 0, output
    assert wait_gone(children) == set(), f"left behind: {children}\n{output}"
    assert "stopped gunicorn, worker, mail sink, cache Redis, Redis, SecantusDB" in output
    assert (tmp_path / "jwt_secret").exists() and (tmp_path / "db").is_dir()
    metrics_dir = Path(tempfile.gettempdir()) / f"taskapi-metrics-{ports['http']}"
    assert not metrics_dir.exists(), "gunicorn's metrics samples are left in the temp directory"

    again = start_runner(tmp_path, ports)
    try:
        wait_http(base + "/readyz", again, timeout=60)
        with pymongo.MongoClient(devserver.mongo_uri(ports["mongo"])) as client:
            assert client.taskapi.notes.find_one({"_id": "kept"})["text"] == "survives a restart"
    finally:
        assert metrics_dir.is_dir()  # while serving
        again.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        again.communicate(timeout=40)
    assert again.returncode == 0
    assert not metrics_dir.exists()


def test_busy_port_gives_one_clear_line(tmp_path, ports):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["mongo"]))
        squatter.listen()
        runner = start_runner(tmp_path, ports)
        output = runner.communicate(timeout=60)[0]
    assert runner.returncode == 1
    assert output.strip() == (
        f"taskapi: port {ports['mongo']} is already in use, so the embedded SecantusDB cannot start "
        "(stop the other server, set EMBEDDED_MONGODB_PORT to a free port, or set MONGODB_URI)"
    )
