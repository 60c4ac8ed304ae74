"""Small helpers for talking to the API the way a client does."""

from __future__ import annotations

import base64
import json

PASSWORD = "correct horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(client, email: str, password: str = PASSWORD, **extra):
    response = client.post("/api/v1/auth/register", json={"email": email, "password": password, **extra})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def login(client, email: str, password: str = PASSWORD, **kwargs) -> dict:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password}, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def header_of(token: str) -> dict:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def assert_problem(response, status: int) -> dict:
    """problem+json with the envelope docs/api.md describes, and nothing a client should not see."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status and body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "<html" not in text.lower()
    return body


def assert_unauthorized(response) -> dict:
    body = assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return body
