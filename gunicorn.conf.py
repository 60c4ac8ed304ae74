"""gunicorn settings, from the same environment variables as the app (see config.py)."""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from config import ConfigError, get_config

try:
    _config = get_config()  # validated in the master: a bad setting stops the start with one line
except ConfigError as exc:
    sys.stderr.write(f"taskapi: configuration error: {exc}\n")
    sys.exit(1)


def _missing_signing_key(config) -> bool:
    """RS256/ES256 signing needs a key in JWT_PRIVATE_KEYS (development makes one; a service that
    only verifies, with JWKS_URL, needs none)."""
    if config.JWT_ALGORITHM not in ("RS256", "ES256") or config.ENV_NAME == "development" or config.JWKS_URL:
        return False
    folder = config.JWT_PRIVATE_KEYS
    return not (os.path.isdir(folder) and any(name.endswith(".pem") for name in os.listdir(folder)))


if _missing_signing_key(_config):  # the app would answer every login with 503: refuse to start instead
    sys.stderr.write(f"taskapi: configuration error: JWT_PRIVATE_KEYS ({_config.JWT_PRIVATE_KEYS}) holds no *.pem "
                     "key; add one with: flask --app wsgi keys rotate\n")
    sys.exit(1)

bind = f"{_config.HOST}:{_config.PORT}"
workers = _config.WORKERS
# gthread keeps HTTP keep-alive to Nginx and lets a worker overlap I/O waits on MongoDB/Redis;
# this subclass answers gunicorn's own parse errors (414, 431, …) as problem+json, not HTML.
worker_class = "taskapi.runtime.serving.ProblemThreadWorker"
threads = _config.THREADS  # per role: see config.default_threads
keepalive = 5
# A worker silent for 30 s is stuck (every dependency call times out in ~2 s): recycle it.
# Nginx waits 35 s for a response, so gunicorn gives up first and Nginx never answers 504
# for a request the app may still complete.
timeout = 30
# SIGTERM/HUP let in-flight requests finish for up to 20 s before old workers are stopped;
# orchestrators should allow ~25 s between SIGTERM and SIGKILL.
graceful_timeout = 20
# No app import in the master: each worker builds its own app, MongoClient and Redis pool after fork.
preload_app = False
# Trust X-Forwarded-* only from the local proxy when one is configured (ProxyFix does the rest).
forwarded_allow_ips = "127.0.0.1,::1" if _config.TRUSTED_PROXY_COUNT else ""
proxy_allow_ips = forwarded_allow_ips
loglevel = _config.LOG_LEVEL.lower()
errorlog = "-"
# The app logs one line per request itself (route template, status, duration_ms, request_id,
# user id; JSON in production), so gunicorn's own access log is off unless asked for; when on,
# it is JSON lines with the request id too.
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG") else None
logger_class = "taskapi.runtime.serving.JsonAccessLogger"

# Prometheus multiprocess mode: every worker writes its samples here and /metrics sums them.
# Set before the workers fork (they import prometheus_client after), wiped at each start.
_metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"taskapi-metrics-{_config.PORT}"))


def on_starting(server):
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)


def when_ready(server):
    """Warn once, at start, when REDIS_URL's Redis may evict keys: revocation state must not vanish."""
    from taskapi.extensions import redis_eviction_warning

    warning = redis_eviction_warning(_config.REDIS_URL, _config.CACHE_REDIS_URL)
    if warning:
        server.log.warning("taskapi: %s", warning)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)


def on_exit(server):
    """The samples die with the server: nothing is left in the temp directory. Not after a
    USR2 upgrade, whose new master (same directory) goes on serving /metrics."""
    if not getattr(server, "reexec_pid", 0):
        shutil.rmtree(_metrics_dir, ignore_errors=True)
# Managed with signals (HUP/TERM); no shared control socket for several instances to fight over.
control_socket_disable = True
