"""Configuration: every variable from the environment; production refuses to start unsafe."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from config import ROOT, ConfigError, get_config

GOOD_SECRET = "p" * 48


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"MONGODB_URI", "REDIS_URL", "CACHE_REDIS_URL", "JWT_SECRET_KEY", "TASKAPI_ENV"}}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


PRODUCTION = {"TASKAPI_ENV": "production", "MONGODB_URI": "mongodb://db.invalid:27017/taskapi",
              "REDIS_URL": "redis://state.invalid:6379/0", "CACHE_REDIS_URL": "redis://cache.invalid:6379/0",
              "JWT_SECRET_KEY": GOOD_SECRET}


@pytest.mark.parametrize(
    "missing, named",
    [("JWT_SECRET_KEY", "JWT_SECRET_KEY"), ("MONGODB_URI", "MONGODB_URI"), ("REDIS_URL", "REDIS_URL")],
)
def test_production_refuses_missing_setting_with_one_line(missing, named):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = run_python("import wsgi", env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0] and "Traceback" not in result.stderr


def test_production_refuses_short_secret():
    result = run_python("import wsgi", {**PRODUCTION, "JWT_SECRET_KEY": "x" * 31})
    assert result.returncode != 0
    assert "at least 32 bytes" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_production_with_everything_set_builds_without_connecting():
    result = run_python("import wsgi; print(wsgi.app.config['ENV_NAME'], wsgi.app.config['LOG_FORMAT'])", PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["production", "json"]


def test_gunicorn_refuses_to_start_in_production_without_secret():
    env = {k: v for k, v in PRODUCTION.items() if k != "JWT_SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT, env={**{k: v for k, v in os.environ.items() if k != "JWT_SECRET_KEY"}, **env},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "taskapi: configuration error: JWT_SECRET_KEY must be set to at least 32 bytes "
        "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
    )


def test_every_documented_variable_is_read(monkeypatch):
    values = {
        "MONGODB_URI": "mongodb://m:1/x", "REDIS_URL": "redis://r:2/3", "JWT_SECRET_KEY": GOOD_SECRET,
        "CACHE_REDIS_URL": "redis://c:4/0", "API_PUBLIC_URL": "https://tasks.example",
        "ACCESS_TOKEN_TTL_SECONDS": "60", "REFRESH_TOKEN_TTL_SECONDS": "120", "RATELIMIT_ENABLED": "false",
        "RATELIMIT_DEFAULT": "7/minute", "RATELIMIT_LOGIN": "3/minute", "RATELIMIT_LOGIN_ACCOUNT": "2/minute",
        "RATELIMIT_REGISTER": "4/hour", "CACHE_TTL_SECONDS": "9", "TRUSTED_PROXY_COUNT": "1",
        "MAX_CONTENT_LENGTH": "1024", "CORS_ORIGINS": "https://a.example, https://b.example",
        "HOST": "0.0.0.0", "PORT": "9000", "WORKERS": "5", "LOG_LEVEL": "debug", "LOG_FORMAT": "json",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    config = get_config("production")
    assert (config.MONGODB_URI, config.REDIS_URL, config.JWT_SECRET_KEY) == ("mongodb://m:1/x", "redis://r:2/3", GOOD_SECRET)
    assert (config.ACCESS_TOKEN_TTL_SECONDS, config.REFRESH_TOKEN_TTL_SECONDS) == (60, 120)
    assert config.RATELIMIT_ENABLED is False
    assert (config.RATELIMIT_PER_IDENTITY, config.RATELIMIT_LOGIN, config.RATELIMIT_LOGIN_ACCOUNT, config.RATELIMIT_REGISTER) == (
        "7/minute", "3/minute", "2/minute", "4/hour")
    assert (config.CACHE_TTL_SECONDS, config.TRUSTED_PROXY_COUNT, config.MAX_CONTENT_LENGTH) == (9, 1, 1024)
    assert config.CORS_ORIGINS == ["https://a.example", "https://b.example"]
    settings = (config.HOST, config.PORT, config.WORKERS, config.LOG_LEVEL, config.LOG_FORMAT)
    assert settings == ("0.0.0.0", 9000, 5, "DEBUG", "json")
    assert config.CACHE_REDIS_URL == "redis://c:4/0"
    assert config.API_SPEC_OPTIONS["servers"] == [{"url": "https://tasks.example", "description": "this deployment"}]


def test_development_defaults_point_at_embedded_servers(monkeypatch, tmp_path):
    for key in ("MONGODB_URI", "REDIS_URL", "JWT_SECRET_KEY", "WORKERS", "LOG_FORMAT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TASKAPI_VAR_DIR", str(tmp_path))
    config = get_config("development")
    assert config.MONGODB_URI.startswith("mongodb://127.0.0.1:27117/taskapi")
    assert config.REDIS_URL == "redis://127.0.0.1:6390/0"
    assert 2 * (os.cpu_count() or 1) + 1 == config.WORKERS
    assert config.LOG_FORMAT == "text"


def test_development_secret_is_generated_once_and_shared(monkeypatch, tmp_path):
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    monkeypatch.setenv("TASKAPI_VAR_DIR", str(tmp_path))
    first = get_config("development").JWT_SECRET_KEY
    second = get_config("development").JWT_SECRET_KEY  # another worker, or a restart
    assert first == second and len(first) >= 32
    secret_file = tmp_path / "jwt_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600


def test_concurrent_workers_agree_on_the_development_secret(tmp_path):
    code = "import config; print(config.get_config('development').JWT_SECRET_KEY)"
    env = {"TASKAPI_VAR_DIR": str(tmp_path)}
    clean = {k: v for k, v in os.environ.items() if k != "JWT_SECRET_KEY"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env},
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    secrets = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(secrets) == 1 and len(secrets.pop()) >= 32


@pytest.mark.parametrize(
    "key, value",
    [("REDIS_URL", "unix:///run/redis.sock?db=2"), ("REDIS_URL", "rediss://:pw@r.example:6380/0?ssl_cert_reqs=required"),
     ("REDIS_URL", "rediss+sentinel://s1:26379,s2:26379/taskapi/1?sentinel_password=x"),
     ("CACHE_REDIS_URL", "redis://cache:6379/0"), ("BROKER_URL", "amqps://u:p@rabbit:5671/v"),
     ("BROKER_URL", "sentinel://s1:26379/0;sentinel://s2:26379/0")],
)
def test_every_documented_redis_and_broker_form_is_accepted(monkeypatch, key, value):
    monkeypatch.setenv(key, value)
    assert getattr(get_config("testing"), key) == value


@pytest.mark.parametrize(
    "key, value, message",
    [("PORT", "eighty", "PORT must be an integer"), ("RATELIMIT_ENABLED", "maybe", "RATELIMIT_ENABLED must be true or false"),
     ("TASKAPI_ENV", "staging", "TASKAPI_ENV must be one of"), ("LOG_FORMAT", "xml", "LOG_FORMAT must be text or json"),
     ("MAX_CONTENT_LENGTH", "0", "MAX_CONTENT_LENGTH must be >= 1"),
     ("RATELIMIT_LOGIN", "lots", "RATELIMIT_LOGIN must be a rate"),
     ("RATELIMIT_DEFAULT", "9/fortnight", "RATELIMIT_DEFAULT must be a rate"),
     ("REDIS_URL", "redis+sentinel://s1:26379", "REDIS_URL: a Sentinel URL ends with /service_name"),
     ("CACHE_REDIS_URL", "redis+sentinel://s1/taskapi", "CACHE_REDIS_URL: a Sentinel URL lists host:port pairs"),
     ("BROKER_URL", "redis+sentinel://s1:1/taskapi?ssl=1", "BROKER_URL: a Sentinel URL takes only"),
     ("REDIS_URL", "http://r:6379/0", "REDIS_URL must be a redis://")],
)
def test_bad_values_are_one_clear_error(monkeypatch, key, value, message):
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=message):
        get_config(None if key == "TASKAPI_ENV" else "testing")
