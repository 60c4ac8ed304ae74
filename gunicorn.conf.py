"""gunicorn settings, from the same environment variables as the app (see config.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from config import ConfigError, get_config  # noqa: E402 - needs the path above

try:
    _config = get_config()  # validated in the master: a bad setting stops the start with one line
except ConfigError as exc:
    sys.stderr.write(f"taskapi: configuration error: {exc}\n")
    sys.exit(1)

bind = f"{_config.HOST}:{_config.PORT}"
workers = _config.WORKERS
# gthread keeps HTTP keep-alive to Nginx and lets a worker overlap I/O waits on MongoDB/Redis;
# this subclass answers gunicorn's own parse errors (414, 431, …) as problem+json, not HTML.
worker_class = "taskapi.gunicorn_worker.ProblemThreadWorker"
threads = int(os.environ.get("THREADS", "4"))
keepalive = 5
# A request that runs 30 s is a bug (dependency calls time out in ~2 s): recycle the worker.
timeout = 30
# SIGTERM/HUP let in-flight requests finish for up to 20 s before workers are stopped.
graceful_timeout = 20
# No app import in the master: each worker builds its own app, MongoClient and Redis pool after fork.
preload_app = False
# Trust X-Forwarded-* only from the local proxy when one is configured (ProxyFix does the rest).
forwarded_allow_ips = "127.0.0.1,::1" if _config.TRUSTED_PROXY_COUNT else ""
proxy_allow_ips = forwarded_allow_ips
loglevel = _config.LOG_LEVEL.lower()
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
# Managed with signals (HUP/TERM); no shared control socket for several instances to fight over.
control_socket_disable = True
