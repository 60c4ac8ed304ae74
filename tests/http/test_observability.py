"""Logs (one line per request, JSON in production, never a secret) and Prometheus metrics."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from taskapi.http.logs import RedactFilter
from tests.helpers import bearer, login, register
from tests.servers import gunicorn

SECRET_PASSWORD = "hunter2-very-secret-passphrase"


def test_json_request_log_has_the_fields_and_no_secrets(make_app, capsys):
    client = make_app(LOG_FORMAT="json", LOG_LEVEL="INFO").test_client()
    register(client, "log@example.com", SECRET_PASSWORD)
    tokens = login(client, "log@example.com", SECRET_PASSWORD)
    task = client.post("/api/v1/tasks", json={"title": "logged"}, headers=bearer(tokens["access_token"])).get_json()
    client.get(f"/api/v1/tasks/{task['id']}", headers={**bearer(tokens["access_token"]), "X-Request-ID": "trace-42"})
    client.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"]))
    client.get("/api/v1/tasks", headers=bearer("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.forged"))
    err = capsys.readouterr().err
    for secret in (SECRET_PASSWORD, tokens["access_token"], tokens["refresh_token"], "Authorization", "eyJhbGci"):
        assert secret not in err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests_logged = [line for line in lines if line["logger"] == "taskapi.request"]
    assert len(requests_logged) == 6  # one per request
    get_one = next(line for line in requests_logged if line["request_id"] == "trace-42")
    assert {"time", "level", "method", "route", "status", "duration_ms", "request_id", "user_id"} <= set(get_one)
    assert get_one["route"] == "/api/v1/tasks/<id:task_id>" and get_one["status"] == 200
    me = client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"])).get_json()
    assert get_one["method"] == "GET" and get_one["user_id"] == me["id"]
    assert isinstance(get_one["duration_ms"], float) and get_one["level"] == "INFO"


def test_a_token_in_the_url_path_is_redacted_from_every_field(make_app, capsys):
    client = make_app(LOG_FORMAT="json", LOG_LEVEL="INFO").test_client()
    register(client, "path@example.com")
    token = login(client, "path@example.com")["access_token"]
    capsys.readouterr()
    client.get(f"/api/v1/tasks/{token}", headers=bearer(token))
    client.get(f"/Bearer%20{token}")
    err = capsys.readouterr().err
    assert token not in err and token.split(".")[1] not in err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [line["path"] for line in lines if line["logger"] == "taskapi.request"] == \
           ["/api/v1/tasks/[redacted]", "/[redacted]"]


def test_text_log_in_development_is_readable(make_app, capsys):
    client = make_app(LOG_FORMAT="text", LOG_LEVEL="INFO").test_client()
    client.get("/healthz", headers={"X-Request-ID": "dev-1"})
    line = next(line for line in capsys.readouterr().err.splitlines() if "taskapi.request" in line)
    assert "[dev-1] GET /healthz 200" in line and not line.startswith("{")


def test_redaction_covers_messages_arguments_and_tracebacks():
    record = logging.LogRecord("taskapi", logging.ERROR, __file__, 1, "header was %s",
                               ("Bearer eyJabc.eyJdef.ghi",), None)
    try:
        raise ValueError("token eyJabc.eyJdef.ghi leaked")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    RedactFilter().filter(record)
    assert "eyJ" not in record.getMessage() and "eyJ" not in record.exc_text and "[redacted]" in record.exc_text


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{wanted}}} not in metrics")


def test_metrics_format_route_templates_and_no_rate_limit(make_app):
    client = make_app(RATELIMIT_DEFAULT="2/minute").test_client()
    client.get("/api/v1/tasks/6b0cf4e5d9870db21da3bdfa")  # 401, counted under its template
    for _ in range(5):
        response = client.get("/metrics")
        assert response.status_code == 200  # never rate limited
    assert response.mimetype == "text/plain" and "version=" in response.headers["Content-Type"]
    text = response.get_data(as_text=True)
    assert metric(text, "taskapi_http_requests_total", route="/api/v1/tasks/<id:task_id>", status="401") >= 1
    assert metric(text, "taskapi_http_request_duration_seconds_bucket", route="/api/v1/tasks/<id:task_id>", le="+Inf") >= 1
    assert "/api/v1/tasks/6b0cf4e5d9870db21da3bdfa" not in text  # templates, not raw paths


def test_metrics_allow_list(make_app):
    client = make_app(METRICS_ALLOW_NETWORKS="10.0.0.0/8, ::1/128").test_client()
    assert client.get("/metrics").status_code == 404  # 127.0.0.1 is not on the list
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200


def test_metrics_add_up_every_gunicorn_worker(app_env, log_dir, app):
    with gunicorn(app_env, workers=3, log_path=log_dir / "gunicorn-metrics.log") as base:
        for _ in range(30):
            with requests.Session() as session:  # a fresh connection each: the kernel spreads them
                assert session.get(base + "/readyz", timeout=10).status_code == 200
        counts = set()
        for _ in range(6):
            with requests.Session() as session:
                text = session.get(base + "/metrics", timeout=10).text
            counts.add(metric(text, "taskapi_http_requests_total", method="GET", route="/readyz", status="200"))
        assert counts == {30.0}, counts  # every worker reports the whole server


@pytest.mark.parametrize("path", ["/metrics"])
def test_metrics_are_not_in_the_public_api_spec(client, path):
    assert path not in client.get("/openapi.json").get_json()["paths"]
