"""Configuration: Development / Testing / Production, every value read from the environment.

Values are read when a config object is built (not at import), so a process that changes
its environment (tests, the dev runner) gets what it asked for. Production fails fast:
`ConfigError` carries one clear line naming the missing or weak setting.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = Path(__file__).resolve().parent

EMBEDDED_MONGODB_PORT = 27117
EMBEDDED_REDIS_PORT = 6390
EMBEDDED_CACHE_REDIS_PORT = 6391
EMBEDDED_SMTP_PORT = 8025
MIN_SECRET_BYTES = 32


class ConfigError(RuntimeError):
    """A setting is missing or unsafe; the message is one line for the operator."""


SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, dict[str, str], dict[str, str], bool]:
    """(sentinel addresses, service name, db, the master's credentials, the Sentinels' credentials, TLS)
    of a Sentinel URL (README "Redis high availability"); ConfigError, in one line, when it is malformed."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ConfigError(f"a Sentinel URL lists host:port pairs, got {host!r}")
        sentinels.append((name.strip("[]"), int(port)))
    path = [piece for piece in parts.path.split("/") if piece]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError("a Sentinel URL ends with /service_name or /service_name/db")
    auth: dict[str, str] = {}
    if credentials:
        user, _, password = credentials.partition(":")
        auth = {"password": unquote(password)} | ({"username": unquote(user)} if user else {})
    query = parse_qs(parts.query)
    if set(query) - {"sentinel_password"}:
        raise ConfigError(f"a Sentinel URL takes only ?sentinel_password=, not {sorted(set(query) - {'sentinel_password'})}")
    sentinel_auth = {"password": query["sentinel_password"][0]} if "sentinel_password" in query else {}
    return sentinels, path[0], int(path[1]) if len(path) == 2 else 0, auth, sentinel_auth, parts.scheme.startswith("rediss")


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`500ms`, `5s`, `5m`, `2h`, `5d` (or bare seconds) in seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]


def env_durations(name: str, default: str) -> list[float]:
    """A comma-separated list of durations (`5s,5m,2h`), in seconds."""
    raw = os.environ.get(name, "").strip() or default
    try:
        values = [parse_duration(item) for item in raw.split(",")]
    except ValueError:
        raise ConfigError(f"{name} must be durations like 5s,5m,2h,1d separated by commas, got {raw!r}") from None
    if not values or any(value <= 0 for value in values):
        raise ConfigError(f"{name} must be positive durations, got {raw!r}")
    return values


def var_dir() -> Path:
    """Where the embedded runtime keeps data and the development secret."""
    return Path(env_str("TASKAPI_VAR_DIR") or ROOT / "var")


def default_workers(service: str = "all") -> int:
    """gunicorn workers per role: the auth service spends its time in argon2 (CPU), so one process
    per core and a spare; the tasks service and the monolith mostly wait on MongoDB and Redis."""
    cores = os.cpu_count() or 1
    return cores + 1 if service == "auth" else 2 * cores + 1


def default_threads(service: str = "all") -> int:
    """gthread threads per worker: 2 at the auth service (each argon2 hash holds ARGON2_MEMORY_KIB
    and a core; a second thread overlaps one hash with a database wait), 4 elsewhere."""
    return 2 if service == "auth" else 4


class Config:
    """Settings shared by every environment; see README "Configuration"."""

    ENV_NAME = "base"
    TESTING = False
    DEBUG = False

    def __init__(self) -> None:
        # The embedded servers' ports, as `make run` starts them: every command that reads this
        # config (`flask --app wsgi seed`, `db status`, ...) finds the same servers.
        self.EMBEDDED_MONGODB_PORT = env_int("EMBEDDED_MONGODB_PORT", EMBEDDED_MONGODB_PORT, minimum=1)
        self.EMBEDDED_REDIS_PORT = env_int("EMBEDDED_REDIS_PORT", EMBEDDED_REDIS_PORT, minimum=1)
        self.EMBEDDED_CACHE_REDIS_PORT = env_int("EMBEDDED_CACHE_REDIS_PORT", EMBEDDED_CACHE_REDIS_PORT, minimum=1)
        self.EMBEDDED_SMTP_PORT = env_int("EMBEDDED_SMTP_PORT", EMBEDDED_SMTP_PORT, minimum=1)  # make run's mail sink
        self.RUN_WORKER = env_bool("RUN_WORKER", True)  # `make run` starts a notification worker
        self.MONGODB_URI = env_str("MONGODB_URI") or (  # the embedded server: see devserver.mongo_uri
            f"mongodb://127.0.0.1:{self.EMBEDDED_MONGODB_PORT}/taskapi"
            "?directConnection=true&retryWrites=false"
        )
        # Short server selection: a dead database answers 503 in ~2 s, never a 30 s hang.
        self.MONGODB_TIMEOUT_MS = env_int("MONGODB_TIMEOUT_MS", 2000, minimum=100)
        # Every MongoDB operation of an API request shares this budget (pymongo's client-side
        # operation timeout: it also sends maxTimeMS, so the server abandons what we gave up on).
        self.MONGODB_REQUEST_TIMEOUT_MS = env_int("MONGODB_REQUEST_TIMEOUT_MS", self.MONGODB_TIMEOUT_MS, minimum=100)
        # Replica sets (Atlas): writes acknowledged by a majority within MONGODB_WTIMEOUT_MS, reads of
        # majority-committed data, retryable reads and writes. MONGODB_URI's own options win.
        self.MONGODB_WRITE_CONCERN = env_str("MONGODB_WRITE_CONCERN", "majority")
        self.MONGODB_WTIMEOUT_MS = env_int("MONGODB_WTIMEOUT_MS", 5000, minimum=1)
        self.MONGODB_READ_CONCERN = env_str("MONGODB_READ_CONCERN", "majority")
        # The admin's global stats (a scatter-gather over every owner) may read from a secondary
        # no more than MONGODB_STATS_MAX_STALENESS_SECONDS (at least 90) behind the primary.
        self.MONGODB_STATS_READ_PREFERENCE = env_str("MONGODB_STATS_READ_PREFERENCE", "secondaryPreferred")
        self.MONGODB_STATS_MAX_STALENESS_SECONDS = env_int("MONGODB_STATS_MAX_STALENESS_SECONDS", 90, minimum=90)
        # Which server MONGODB_URI names, for the query plans: auto (ask it), mongodb or secantus.
        self.MONGODB_ENGINE = env_str("MONGODB_ENGINE", "auto").lower()
        # Revocation state, sessions, rate limits, idempotency records: a Redis that never evicts.
        self.REDIS_URL = env_str("REDIS_URL") or f"redis://127.0.0.1:{self.EMBEDDED_REDIS_PORT}/0"
        self.REDIS_TIMEOUT_SECONDS = env_int("REDIS_TIMEOUT_MS", 500, minimum=50) / 1000
        # A revocation (logout, logout-all, password change, role change, deactivation) answers 2xx
        # only once this many replicas have it (Redis WAIT), so a failover cannot undo it; none in
        # REDIS_WAIT_TIMEOUT_MS: 503. Default 1 with a Sentinel REDIS_URL, else 0 (no replica).
        sentinel = self.REDIS_URL.startswith(SENTINEL_SCHEMES)
        self.REDIS_REVOCATION_REPLICAS = env_int("REDIS_REVOCATION_REPLICAS", 1 if sentinel else 0)
        self.REDIS_WAIT_TIMEOUT_MS = env_int("REDIS_WAIT_TIMEOUT_MS", 250, minimum=1)
        # Seconds a client is told to wait after a 503 caused by MongoDB or Redis.
        self.DEPENDENCY_RETRY_AFTER_SECONDS = env_int("DEPENDENCY_RETRY_AFTER_SECONDS", 2, minimum=1)

        # HMAC key of HS256 tokens and of paging cursors (needed with RS256/ES256 too).
        self.JWT_SECRET_KEY = env_str("JWT_SECRET_KEY")
        self.JWT_ALGORITHM = env_str("JWT_ALGORITHM", "HS256")
        # RS256/ES256: a directory of PEM private keys; the newest signs, all verify (services/keys.py).
        self.JWT_PRIVATE_KEYS = env_str("JWT_PRIVATE_KEYS") or self.default_private_keys()
        # Which routes this process serves: all (the monolith), auth (/auth, /users, the JWK set)
        # or tasks (/tasks, /stats, /webhooks).
        self.TASKAPI_SERVICE = env_str("TASKAPI_SERVICE", "all").lower()
        # A service that only verifies tokens (RS256/ES256): the auth service's JWK set, fetched
        # and cached; a token with an unknown kid fetches it again, at most every JWKS_REFETCH_SECONDS.
        self.JWKS_URL = env_str("JWKS_URL")
        # Moving from HS256 to RS256/ES256 without logging anyone out: until this moment, refresh
        # tokens signed HS256 with JWT_SECRET_KEY (issued before the switch) are exchanged for new
        # pairs. Unset: never.
        self.JWT_ACCEPT_HS256_UNTIL = env_str("JWT_ACCEPT_HS256_UNTIL")
        self.HS256_ACCEPTED_UNTIL = 0.0  # the same, as a Unix time (set by validation)
        self.JWKS_REFETCH_SECONDS = env_int("JWKS_REFETCH_SECONDS", 30, minimum=1)
        # A new signing key is published at once and signs only this long after it was added,
        # so every verifier has fetched it before it sees a token it signed (> JWKS_REFETCH_SECONDS).
        self.JWT_KEY_ACTIVATION_SECONDS = env_int("JWT_KEY_ACTIVATION_SECONDS", 60, minimum=0)
        # `iss` and `aud` of every token: deployments that share a secret and a Redis keep apart
        # by giving each its own values.
        self.JWT_ISSUER = env_str("JWT_ISSUER", "taskapi")
        self.JWT_AUDIENCE = env_str("JWT_AUDIENCE", "taskapi")
        self.ACCESS_TOKEN_TTL_SECONDS = env_int("ACCESS_TOKEN_TTL_SECONDS", 900, minimum=1)
        self.REFRESH_TOKEN_TTL_SECONDS = env_int("REFRESH_TOKEN_TTL_SECONDS", 2_592_000, minimum=1)
        # argon2id cost (argon2-cffi's RFC 9106 low-memory profile); a change rehashes on next login.
        self.ARGON2_TIME_COST = env_int("ARGON2_TIME_COST", 3, minimum=1)
        self.ARGON2_MEMORY_KIB = env_int("ARGON2_MEMORY_KIB", 65536, minimum=8)
        self.ARGON2_PARALLELISM = env_int("ARGON2_PARALLELISM", 4, minimum=1)

        self.RATELIMIT_ENABLED = env_bool("RATELIMIT_ENABLED", True)
        # One budget per identity across all routes (env RATELIMIT_DEFAULT; flask-limiter gives
        # its own RATELIMIT_DEFAULT key a per-route meaning, so the attribute is named apart).
        self.RATELIMIT_PER_IDENTITY = env_str("RATELIMIT_DEFAULT", "600/minute")
        self.RATELIMIT_LOGIN = env_str("RATELIMIT_LOGIN", "10/minute")
        self.RATELIMIT_LOGIN_ACCOUNT = env_str("RATELIMIT_LOGIN_ACCOUNT", "5/minute")
        # Reset emails to one address from anywhere (many IPs cannot flood an inbox, nor keep
        # replacing its token).
        self.RATELIMIT_PASSWORD_RESET_ADDRESS = env_str("RATELIMIT_PASSWORD_RESET_ADDRESS", "5/hour")
        self.RATELIMIT_REGISTER = env_str("RATELIMIT_REGISTER", "20/hour")

        self.CACHE_TTL_SECONDS = env_int("CACHE_TTL_SECONDS", 30)
        # The response cache lives in a Redis of its own (maxmemory + allkeys-lru), so cache data
        # can never crowd out or evict revocation state. Development starts one beside REDIS_URL.
        self.CACHE_REDIS_URL = env_str("CACHE_REDIS_URL") or self.default_cache_redis_url()
        # What one user may hold in the cache: entries and bytes (their oldest entries go first).
        self.CACHE_MAX_ENTRIES_PER_USER = env_int("CACHE_MAX_ENTRIES_PER_USER", 64, minimum=1)
        self.CACHE_MAX_BYTES_PER_USER = env_int("CACHE_MAX_BYTES_PER_USER", 1_048_576, minimum=1024)
        # After a cache failure this process reads from MongoDB only, for this long.
        self.CACHE_RETRY_SECONDS = env_int("CACHE_RETRY_SECONDS", 5)
        # Bounded state per user: tasks kept, and Idempotency-Keys remembered per 24 h (0: no limit).
        self.TASKS_MAX_PER_USER = env_int("TASKS_MAX_PER_USER", 50_000)
        self.IDEMPOTENCY_MAX_KEYS_PER_USER = env_int("IDEMPOTENCY_MAX_KEYS_PER_USER", 1000, minimum=1)
        self.TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
        self.MAX_CONTENT_LENGTH = env_int("MAX_CONTENT_LENGTH", 65536, minimum=1)
        self.CORS_ORIGINS = env_list("CORS_ORIGINS")
        # Redirect plain HTTP to HTTPS (behind a TLS-terminating proxy, with TRUSTED_PROXY_COUNT set).
        self.FORCE_HTTPS = env_bool("FORCE_HTTPS", False)

        # --- notifications (reminders, webhooks, mail): the worker, `flask --app wsgi worker` ---
        # The message broker: amqp://... (RabbitMQ) in production; unset, the main Redis (REDIS_URL).
        self.BROKER_URL = env_str("BROKER_URL") or self.REDIS_URL
        # Queue names carry a version, so a deploy that changes a message's shape uses new queues.
        self.BROKER_QUEUE_PREFIX = env_str("BROKER_QUEUE_PREFIX", "taskapi.v1")
        self.WORKER_CONCURRENCY = env_int("WORKER_CONCURRENCY", 8, minimum=1)  # deliveries in flight per worker
        # How often an idle worker looks for events to relay and deliveries, reminders and mail due.
        self.WORKER_POLL_MS = env_int("WORKER_POLL_MS", 200, minimum=10)
        self.REMINDER_MAX_DELAY_SECONDS = env_int("REMINDER_MAX_DELAY_SECONDS", 60, minimum=1)
        self.WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
        self.WEBHOOK_RETRY_SCHEDULE = env_durations("WEBHOOK_RETRY_SCHEDULE", "5s,5m,30m,2h,5h,10h,10h")
        self.WEBHOOK_DISABLE_AFTER_SECONDS = env_durations("WEBHOOK_DISABLE_AFTER", "5d")[0]
        self.WEBHOOK_ALLOW_HTTP = env_bool("WEBHOOK_ALLOW_HTTP", False)
        self.WEBHOOK_ALLOW_NETWORKS = env_list("WEBHOOK_ALLOW_NETWORKS")
        self.WEBHOOK_MAX_PER_USER = env_int("WEBHOOK_MAX_PER_USER", 20, minimum=1)
        # One endpoint (and one user) may hold only this many deliveries in flight at once, so a
        # slow receiver waits on itself and never on other users' deliveries.
        self.WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT = env_int("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", 2, minimum=1)
        self.WEBHOOK_MAX_IN_FLIGHT_PER_USER = env_int("WEBHOOK_MAX_IN_FLIGHT_PER_USER", 4, minimum=1)
        # A CA bundle to verify receivers' TLS with, instead of the system's (private CAs, tests).
        self.WEBHOOK_CA_FILE = env_str("WEBHOOK_CA_FILE") or None
        self.SMTP_URL = env_str("SMTP_URL")  # smtp://, smtps:// or smtp+starttls://[user:pass@]host:port
        self.MAIL_FROM = env_str("MAIL_FROM", "taskapi <no-reply@localhost>")
        self.SMTP_TIMEOUT_SECONDS = env_int("SMTP_TIMEOUT_SECONDS", 10, minimum=1)
        # Password reset: how long the emailed token works, and the link it is sent in.
        self.PASSWORD_RESET_TTL_SECONDS = env_int("PASSWORD_RESET_TTL_SECONDS", 1800, minimum=60)
        self.PASSWORD_RESET_URL = env_str("PASSWORD_RESET_URL", "http://localhost:8000/reset?token={token}")

        self.HOST = env_str("HOST", "127.0.0.1")
        self.PORT = env_int("PORT", 8000, minimum=1)
        self.WORKERS = env_int("WORKERS", default_workers(env_str("TASKAPI_SERVICE", "all").lower()), minimum=1)
        self.THREADS = env_int("THREADS", default_threads(env_str("TASKAPI_SERVICE", "all").lower()), minimum=1)
        # Who may read /metrics (comma-separated networks, e.g. 10.0.0.0/8); empty: anyone who reaches it.
        self.METRICS_ALLOW_NETWORKS = env_list("METRICS_ALLOW_NETWORKS")
        self.LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
        self.LOG_FORMAT = env_str("LOG_FORMAT", self.default_log_format())

        # flask-smorest / OpenAPI
        self.API_TITLE = "taskapi"
        self.API_VERSION = "v1"
        self.OPENAPI_VERSION = "3.0.3"
        self.OPENAPI_URL_PREFIX = "/"
        self.OPENAPI_JSON_PATH = "openapi.json"
        self.OPENAPI_SWAGGER_UI_PATH = "docs"
        self.OPENAPI_SWAGGER_UI_URL = "/docs/assets/"
        # Where clients reach the API (the spec's `servers`). Unset: "/", the origin the document
        # was fetched from, which is right behind any proxy and keeps /docs "Try it out" working.
        self.API_PUBLIC_URL = env_str("API_PUBLIC_URL").rstrip("/")
        self.API_SPEC_OPTIONS = {
            "servers": [{"url": self.API_PUBLIC_URL or "/", "description": "this deployment"}],
            "info": {
                "description": "Task management with JWT auth and instant revocation. Client guide: docs/api.md "
                               "in the repository; every error is RFC 9457 problem+json.",
                "license": {"name": "Proprietary", "url": f"{self.API_PUBLIC_URL}/license"},  # "/license" unset
                "contact": {"name": "taskapi maintainers", "email": "taskapi@example.invalid"},
            },
        }

    def default_log_format(self) -> str:
        return "text"

    def default_cache_redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.EMBEDDED_CACHE_REDIS_PORT}/0"

    def default_private_keys(self) -> str:
        return ""  # production names its key directory

    def validate(self) -> None:
        """Raise ConfigError (one line) when a setting cannot work."""
        for name in ("REDIS_URL", "CACHE_REDIS_URL", "BROKER_URL"):
            url = getattr(self, name)
            if url.startswith(SENTINEL_SCHEMES):
                try:
                    parse_sentinel_url(url)
                except ConfigError as exc:
                    raise ConfigError(f"{name}: {exc}") from None
            elif name != "BROKER_URL" and not url.startswith(("redis://", "rediss://", "unix://")):
                scheme = f"{url.split('://')[0]}://..." if "://" in url else "a value with no scheme"
                raise ConfigError(f"{name} must be a redis://, rediss://, unix:// or redis+sentinel:// URL, got {scheme}")
        if self.MONGODB_ENGINE not in {"auto", "mongodb", "secantus"}:
            raise ConfigError(f"MONGODB_ENGINE must be auto, mongodb or secantus, got {self.MONGODB_ENGINE!r}")
        if self.LOG_FORMAT not in {"text", "json"}:
            raise ConfigError(f"LOG_FORMAT must be text or json, got {self.LOG_FORMAT!r}")
        from limits import parse_many

        for name in ("RATELIMIT_PER_IDENTITY", "RATELIMIT_LOGIN", "RATELIMIT_LOGIN_ACCOUNT", "RATELIMIT_REGISTER",
                     "RATELIMIT_PASSWORD_RESET_ADDRESS"):
            try:
                parse_many(getattr(self, name))
            except ValueError:
                env_name = "RATELIMIT_DEFAULT" if name == "RATELIMIT_PER_IDENTITY" else name
                raise ConfigError(f"{env_name} must be a rate like 10/minute, got {getattr(self, name)!r}") from None
        import ipaddress

        for network in self.METRICS_ALLOW_NETWORKS:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"METRICS_ALLOW_NETWORKS has an invalid network: {network!r}") from None
        for network in self.WEBHOOK_ALLOW_NETWORKS:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"WEBHOOK_ALLOW_NETWORKS has an invalid network: {network!r}") from None
        if "{token}" not in self.PASSWORD_RESET_URL:
            raise ConfigError("PASSWORD_RESET_URL must hold {token}, where the reset token goes")
        if self.SMTP_URL and not re.match(r"^(smtp|smtps|smtp\+starttls)://", self.SMTP_URL):
            raise ConfigError("SMTP_URL must start with smtp://, smtps:// or smtp+starttls://")
        if self.JWT_ALGORITHM not in {"HS256", "HS384", "HS512", "RS256", "ES256"}:
            raise ConfigError(f"JWT_ALGORITHM must be HS256, HS384, HS512, RS256 or ES256, got {self.JWT_ALGORITHM!r}")
        if self.REDIS_REVOCATION_REPLICAS and self.REDIS_WAIT_TIMEOUT_MS >= self.REDIS_TIMEOUT_SECONDS * 1000:
            raise ConfigError("REDIS_WAIT_TIMEOUT_MS must be below REDIS_TIMEOUT_MS: Redis must answer WAIT before "
                              "the client gives up on it")
        if self.MONGODB_WRITE_CONCERN != "majority" and not self.MONGODB_WRITE_CONCERN.isdigit():
            raise ConfigError(f"MONGODB_WRITE_CONCERN must be majority or a number of nodes, got {self.MONGODB_WRITE_CONCERN!r}")
        if self.MONGODB_READ_CONCERN not in {"local", "majority", "available"}:
            raise ConfigError(f"MONGODB_READ_CONCERN must be local, majority or available, got {self.MONGODB_READ_CONCERN!r}")
        if self.MONGODB_STATS_READ_PREFERENCE not in {"primary", "primaryPreferred", "secondary", "secondaryPreferred",
                                                      "nearest"}:
            raise ConfigError("MONGODB_STATS_READ_PREFERENCE must be a read preference mode such as secondaryPreferred")
        if self.TASKAPI_SERVICE not in {"all", "auth", "tasks"}:
            raise ConfigError(f"TASKAPI_SERVICE must be all, auth or tasks, got {self.TASKAPI_SERVICE!r}")
        if self.JWKS_URL and not re.match(r"^https?://", self.JWKS_URL):
            raise ConfigError("JWKS_URL must be an http:// or https:// URL")
        if self.JWKS_URL and self.JWT_ALGORITHM not in {"RS256", "ES256"}:
            raise ConfigError("JWKS_URL needs JWT_ALGORITHM=RS256 or ES256 (HS256 tokens are checked with JWT_SECRET_KEY)")
        if self.JWKS_URL and self.TASKAPI_SERVICE != "tasks":
            raise ConfigError("JWKS_URL is for TASKAPI_SERVICE=tasks: the other services sign, with JWT_PRIVATE_KEYS")
        if self.JWT_ALGORITHM in {"RS256", "ES256"} and not (self.JWT_PRIVATE_KEYS or self.JWKS_URL):
            raise ConfigError(f"JWT_ALGORITHM={self.JWT_ALGORITHM} needs JWT_PRIVATE_KEYS, a directory of PEM "
                              "private keys (make one with: flask --app wsgi keys rotate)")
        if self.JWT_ACCEPT_HS256_UNTIL:
            try:
                until = datetime.fromisoformat(self.JWT_ACCEPT_HS256_UNTIL.replace("Z", "+00:00"))
            except ValueError:
                raise ConfigError("JWT_ACCEPT_HS256_UNTIL must be a timestamp like 2026-12-31T00:00:00Z") from None
            if until.tzinfo is None:
                raise ConfigError("JWT_ACCEPT_HS256_UNTIL needs a time zone (e.g. Z)")
            if self.JWT_ALGORITHM not in {"RS256", "ES256"}:
                raise ConfigError("JWT_ACCEPT_HS256_UNTIL is for a move to JWT_ALGORITHM=RS256 or ES256")
            if self.TASKAPI_SERVICE == "tasks":
                raise ConfigError("JWT_ACCEPT_HS256_UNTIL is for the service that signs (auth or all): it takes "
                                  "HS256 refresh tokens, which only the auth service exchanges")
            if until.timestamp() > time.time() + self.REFRESH_TOKEN_TTL_SECONDS + 86400:
                raise ConfigError("JWT_ACCEPT_HS256_UNTIL is later than every HS256 refresh token can live "
                                  "(REFRESH_TOKEN_TTL_SECONDS from now, plus a day)")
            self.HS256_ACCEPTED_UNTIL = until.timestamp()
        if len(self.JWT_SECRET_KEY.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"JWT_SECRET_KEY must be set to at least {MIN_SECRET_BYTES} bytes "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )


class DevelopmentConfig(Config):
    """Embedded servers by default; one generated secret shared by every worker."""

    ENV_NAME = "development"
    DEBUG = False  # the Werkzeug debugger never runs behind gunicorn

    def __init__(self) -> None:
        load_dotenv_file()
        super().__init__()
        if not self.JWT_SECRET_KEY:
            self.JWT_SECRET_KEY = development_secret(var_dir() / "jwt_secret")

    def default_private_keys(self) -> str:
        return str(var_dir() / "keys")  # with RS256/ES256, a first key is made there (tokens.init_jwt)


class TestingConfig(Config):
    """Used by the test suite: servers and secrets come from the fixtures' environment."""

    ENV_NAME = "testing"
    TESTING = True

    def __init__(self) -> None:
        super().__init__()
        if not self.JWT_SECRET_KEY:
            self.JWT_SECRET_KEY = "testing-secret-" + "x" * MIN_SECRET_BYTES

    def default_cache_redis_url(self) -> str:
        return self.REDIS_URL  # the fixtures name a cache Redis of its own; ad-hoc apps share one


class ProductionConfig(Config):
    """No embedded servers, no generated secrets: every dependency is named explicitly."""

    ENV_NAME = "production"

    def default_log_format(self) -> str:
        return "json"

    def validate(self) -> None:
        for name in ("MONGODB_URI", "REDIS_URL"):
            if not env_str(name):
                raise ConfigError(f"{name} must be set when TASKAPI_ENV=production")
        if self.CACHE_TTL_SECONDS and not env_str("CACHE_REDIS_URL"):
            raise ConfigError("CACHE_REDIS_URL must be set when TASKAPI_ENV=production: a Redis of its own "
                              "(maxmemory, allkeys-lru) for the response cache, or CACHE_TTL_SECONDS=0 for none")
        super().validate()


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def get_config(name: str | None = None) -> Config:
    """Build and validate the config named by `name` or TASKAPI_ENV (default development)."""
    name = (name or env_str("TASKAPI_ENV") or "development").lower()
    if name not in CONFIGS:
        raise ConfigError(f"TASKAPI_ENV must be one of {', '.join(CONFIGS)}, got {name!r}")
    config = CONFIGS[name]()
    config.validate()
    return config


def development_secret(path: Path) -> str:
    """Read the development secret, creating it once; O_EXCL makes concurrent workers agree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    for _ in range(50):  # another worker may be between create and write
        secret = path.read_text().strip()
        if secret:
            return secret
        time.sleep(0.02)
    raise ConfigError(f"development secret file {path} is empty; delete it and restart")


def load_dotenv_file() -> None:
    """Development only: read ./.env without overriding the real environment."""
    env_file = ROOT / ".env"
    if env_file.is_file():
        from dotenv import load_dotenv

        load_dotenv(env_file, override=False)
