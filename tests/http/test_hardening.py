"""Hardening: security headers, proxies, CORS, rate limits (shared, spoof-proof, never off)."""

from __future__ import annotations

import re

from tests.helpers import PASSWORD, assert_problem, bearer, login, register
from tests.servers import MongoServer, RedisServer

SECURITY = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


def assert_security_headers(response, *, https: bool = False):
    for name, value in SECURITY.items():
        assert response.headers[name] == value
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert ("Strict-Transport-Security" in response.headers) is https
    assert "Server" not in response.headers or not re.search(r"\d", response.headers["Server"])


def test_security_headers_on_success_error_and_authenticated_responses(client, user_tokens):
    assert_security_headers(client.get("/healthz"))
    assert_security_headers(client.get("/nope"))
    assert_security_headers(client.post("/api/v1/tasks", data="{", content_type="application/json",
                                        headers=bearer(user_tokens["access_token"])))
    me = client.get("/api/v1/auth/me", headers=bearer(user_tokens["access_token"]))
    assert_security_headers(me)
    assert me.headers["Cache-Control"] == "no-store"


def test_hsts_only_over_https(client):
    assert_security_headers(client.get("/healthz", base_url="https://localhost"), https=True)
    hsts = client.get("/healthz", base_url="https://localhost").headers["Strict-Transport-Security"]
    assert hsts.startswith("max-age=31536000")
    # Without a trusted proxy a client cannot claim HTTPS.
    assert_security_headers(client.get("/healthz", headers={"X-Forwarded-Proto": "https"}))


def test_trusted_proxy_proto_and_client_ip(make_app):
    app = make_app(TRUSTED_PROXY_COUNT="1")
    client = app.test_client()
    assert_security_headers(client.get("/healthz", headers={"X-Forwarded-Proto": "https"}), https=True)


def test_force_https_redirects(make_app):
    client = make_app(FORCE_HTTPS="true").test_client()
    response = client.get("/api/v1/tasks")
    assert response.status_code in (301, 302) and response.headers["Location"].startswith("https://")
    assert client.get("/api/v1/tasks", base_url="https://localhost").status_code == 401


def test_docs_page_has_a_working_strict_csp(client):
    page = client.get("/docs")
    csp = page.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'nonce="{nonce}"' in page.get_data(as_text=True)
    script_src = re.search(r"script-src ([^;]+)", csp).group(1)
    assert "'unsafe-inline'" not in script_src and "http" not in csp
    assert client.get("/docs").headers["Content-Security-Policy"] != csp  # a fresh nonce each time


def test_no_cors_by_default(client):
    response = client.options("/api/v1/tasks", headers={"Origin": "https://evil.example",
                                                        "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_allow_list(make_app):
    client = make_app(CORS_ORIGINS="https://app.example").test_client()
    allowed = client.options("/api/v1/tasks", headers={"Origin": "https://app.example",
                                                       "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "authorization" in allowed.headers["Access-Control-Allow-Headers"].lower()
    other = client.options("/api/v1/tasks", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers
    exposed = client.get("/api/v1/tasks", headers={"Origin": "https://app.example"})
    assert "ETag" in exposed.headers["Access-Control-Expose-Headers"]


# --- rate limits ---------------------------------------------------------------------------

def attempt_login(client, email, password="wrong password", **environ):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password}, **environ)


def test_login_is_limited_per_ip(client):
    for i in range(10):
        response = attempt_login(client, f"user{i}@example.com")
        assert response.status_code == 401
        assert int(response.headers["X-RateLimit-Remaining"]) >= 0 and response.headers["X-RateLimit-Reset"]
        assert "Retry-After" not in response.headers
    limited = attempt_login(client, "fresh@example.com")
    body = assert_problem(limited, 429)
    assert "limit" in body["detail"] and 0 < int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    # Another client IP is not affected.
    assert attempt_login(client, "fresh@example.com", environ_base={"REMOTE_ADDR": "10.9.8.7"}).status_code == 401


def test_login_is_limited_per_ip_and_account(client):
    register(client, "ada@example.com")
    for _ in range(5):
        assert attempt_login(client, "ada@example.com").status_code == 401
    assert_problem(attempt_login(client, "ADA@example.com", PASSWORD), 429)  # even the right password
    assert attempt_login(client, "other@example.com").status_code == 401  # the IP has budget left
    assert client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD},
                       environ_base={"REMOTE_ADDR": "10.1.1.1"}).status_code == 200


def test_spoofed_forwarded_for_does_not_reset_the_count(client):
    for i in range(10):
        attempt_login(client, f"user{i}@example.com", headers={"X-Forwarded-For": f"203.0.113.{i}"})
    assert_problem(attempt_login(client, "x@example.com", headers={"X-Forwarded-For": "198.51.100.1"}), 429)


def test_behind_one_proxy_only_the_last_hop_counts(make_app):
    client = make_app(TRUSTED_PROXY_COUNT="1").test_client()
    for i in range(10):  # the proxy appends the real address; the client's own entries are ignored
        response = attempt_login(client, f"user{i}@example.com", headers={"X-Forwarded-For": f"203.0.113.{i}, 192.0.2.50"})
        assert response.status_code == 401
    assert_problem(attempt_login(client, "x@example.com", headers={"X-Forwarded-For": "1.1.1.1, 192.0.2.50"}), 429)
    assert attempt_login(client, "x@example.com", headers={"X-Forwarded-For": "192.0.2.51"}).status_code == 401


def test_register_is_limited_per_ip(make_app):
    client = make_app(RATELIMIT_REGISTER="3/hour").test_client()
    for i in range(3):
        assert client.post("/api/v1/auth/register", json={"email": f"r{i}@example.com", "password": PASSWORD}).status_code == 201
    assert_problem(client.post("/api/v1/auth/register", json={"email": "r9@example.com", "password": PASSWORD}), 429)


def test_password_change_is_limited_like_login(make_app):
    client = make_app(RATELIMIT_LOGIN_ACCOUNT="2/minute").test_client()
    register(client, "pw@example.com")
    headers = bearer(login(client, "pw@example.com")["access_token"])
    wrong = {"current_password": "not it at all", "new_password": "whatever new"}
    for _ in range(2):
        assert client.post("/api/v1/auth/password", json=wrong, headers=headers).status_code == 422
    assert_problem(client.post("/api/v1/auth/password", json=wrong, headers=headers), 429)


def test_default_budget_is_per_identity(make_app):
    client = make_app(RATELIMIT_DEFAULT="5/minute").test_client()
    register(client, "a@example.com")
    register(client, "b@example.com")
    a = bearer(login(client, "a@example.com")["access_token"])
    b = bearer(login(client, "b@example.com")["access_token"])
    for _ in range(5):
        assert client.get("/api/v1/tasks", headers=a).status_code == 200
    assert_problem(client.get("/api/v1/tasks", headers=a), 429)
    assert_problem(client.get("/api/v1/stats/dashboard", headers=a), 429)  # one budget across routes
    assert client.get("/api/v1/tasks", headers=b).status_code == 200  # another user's budget
    assert client.get("/healthz").status_code == 200 and "X-RateLimit-Limit" not in client.get("/healthz").headers


def test_forged_token_cannot_spend_someone_elses_budget(make_app, app):
    import jwt as pyjwt

    client = make_app(RATELIMIT_DEFAULT="3/minute").test_client()
    register(client, "victim@example.com")
    victim = login(client, "victim@example.com")
    from tests.helpers import claims_of

    forged = pyjwt.encode({**claims_of(victim["access_token"])}, "not-the-secret-" + "x" * 40, algorithm="HS256")
    for _ in range(6):
        client.get("/api/v1/tasks", headers=bearer(forged), environ_base={"REMOTE_ADDR": "10.0.0.66"})
    assert client.get("/api/v1/tasks", headers=bearer(victim["access_token"])).status_code == 200


def test_limits_fall_back_to_memory_when_redis_is_down(make_app, log_dir):
    mongo, cache = MongoServer(log_dir).start(), RedisServer(log_dir).start()
    try:
        application = make_app(MONGODB_URI=mongo.uri, REDIS_URL=cache.url, RATELIMIT_LOGIN="4/minute")
        with application.app_context():
            from taskapi.cli import migrate
            from taskapi.extensions import get_db

            migrate.upgrade(get_db())
        client = application.test_client()
        assert client.post("/api/v1/auth/register", json={"email": "m@example.com", "password": PASSWORD}).status_code == 201
        cache.stop()
        codes = [attempt_login(client, f"m{i}@example.com").status_code for i in range(6)]
        assert codes[:4] == [401] * 4 and codes[4:] == [429, 429], codes  # still throttled, in memory
    finally:
        mongo.stop()
        cache.stop()
