"""Password reset: the request queues one email (202 for every address), the worker sends it
over real SMTP (the dev sink on loopback) with a single-use token, confirm sets the password
and revokes every token of the account."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from taskapi import worker
from taskapi.clock import utcnow
from taskapi.models.mail import mails
from taskapi.models.user import users
from taskapi.services import mailbox
from tests.helpers import PASSWORD, assert_problem, bearer, login, register

RESET, CONFIRM = "/api/v1/auth/password-reset", "/api/v1/auth/password-reset/confirm"
NEW_PASSWORD = "a brand new horse"


@pytest.fixture
def mailing(make_app, sink):
    """An app whose worker steps send through the SMTP sink."""
    return make_app(SMTP_URL=f"smtp://127.0.0.1:{sink.port}", MAIL_FROM="taskapi <no-reply@example.com>",
                    PASSWORD_RESET_URL="https://app.example.com/reset?token={token}")


def send_queued(app) -> list[str | None]:
    """What the worker does with the queued mail: publish, then send each."""
    with app.app_context():
        compose = worker.letters(app)
        return [mailbox.send_mail(ident, compose) for ident in mailbox.mails_to_publish()]


def token_of(message) -> str:
    match = re.search(r"https://app\.example\.com/reset\?token=([A-Za-z0-9_-]+)", message.get_content())
    assert match, message.get_content()
    return match.group(1)


def request_reset(client, email):
    response = client.post(RESET, json={"email": email})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json() == {"detail": "If an active account has this email, a reset link is on its way."}
    return response


def test_the_emailed_token_sets_a_new_password_once_and_ends_every_session(mailing, sink):
    client = mailing.test_client()
    register(client, "ada@example.com")
    tokens_before = login(client, "ada@example.com")
    request_reset(client, "  ADA@example.com ")  # trimmed and lower-cased like login
    assert send_queued(mailing) == ["sent"]
    [message] = sink.messages()
    assert message["To"] == "ada@example.com" and message["Subject"] == "Reset your taskapi password"
    token = token_of(message)
    with mailing.app_context():  # only the email holds the token: the database keeps its hash
        stored = mails().find_one({"kind": "password_reset"})
        assert token not in str(stored) and token not in str(users().find_one({"email": "ada@example.com"}))

    assert client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD}).status_code == 204
    assert client.get("/api/v1/auth/me", headers=bearer(tokens_before["access_token"])).status_code == 401
    assert client.post("/api/v1/auth/refresh", headers=bearer(tokens_before["refresh_token"])).status_code == 401
    assert client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}).status_code == 401
    assert login(client, "ada@example.com", NEW_PASSWORD)["access_token"]
    used = client.post(CONFIRM, json={"token": token, "new_password": "yet another horse"})
    assert "token" in assert_problem(used, 422)["errors"]


def test_unknown_and_deactivated_addresses_get_the_same_answer_and_no_email(mailing, sink):
    client = mailing.test_client()
    register(client, "off@example.com")
    with mailing.app_context():
        users().update_one({"email": "off@example.com"}, {"$set": {"active": False}})
    answers = [request_reset(client, email) for email in ("nobody@example.com", "off@example.com")]
    assert answers[0].get_data() == answers[1].get_data()
    assert send_queued(mailing) == ["dropped", "dropped"]
    assert sink.messages() == []
    with mailing.app_context():
        assert {row["status"] for row in mails().find()} == {"dropped"}
        assert mails().count_documents({"due_at": {"$exists": True}}) == 0  # nothing left to send


def test_only_the_newest_token_works_and_an_expired_one_does_not(mailing, sink):
    client = mailing.test_client()
    register(client, "bo@example.com")
    request_reset(client, "bo@example.com")
    send_queued(mailing)
    request_reset(client, "bo@example.com")
    send_queued(mailing)
    older, newer = (token_of(message) for message in sink.messages())
    replaced = client.post(CONFIRM, json={"token": older, "new_password": NEW_PASSWORD})
    assert "token" in assert_problem(replaced, 422)["errors"]
    with mailing.app_context():  # the newer one, past its time
        users().update_one({"email": "bo@example.com"},
                           {"$set": {"password_reset.expires_at": utcnow() - timedelta(seconds=1)}})
    expired = client.post(CONFIRM, json={"token": newer, "new_password": NEW_PASSWORD})
    assert "token" in assert_problem(expired, 422)["errors"]
    unknown = client.post(CONFIRM, json={"token": "not-a-token", "new_password": NEW_PASSWORD})
    assert "token" in assert_problem(unknown, 422)["errors"]
    assert login(client, "bo@example.com")["access_token"]  # the password never changed


def test_a_password_change_voids_a_pending_reset_token(mailing, sink):
    client = mailing.test_client()
    register(client, "cy@example.com")
    request_reset(client, "cy@example.com")
    send_queued(mailing)
    token = token_of(sink.messages()[0])
    access = login(client, "cy@example.com")["access_token"]
    changed = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                          headers=bearer(access))
    assert changed.status_code == 204
    stale = client.post(CONFIRM, json={"token": token, "new_password": "yet another horse"})
    assert "token" in assert_problem(stale, 422)["errors"]


@pytest.mark.parametrize(("body", "field"), [
    ({}, "email"), ({"email": "not an email"}, "email"), ({"email": "a@example.com", "extra": 1}, "extra"),
])
def test_request_validation(client, body, field):
    assert field in assert_problem(client.post(RESET, json=body), 422)["errors"]


@pytest.mark.parametrize(("body", "field"), [
    ({"new_password": NEW_PASSWORD}, "token"), ({"token": "x"}, "new_password"),
    ({"token": "x", "new_password": "short"}, "new_password"), ({"token": "", "new_password": NEW_PASSWORD}, "token"),
])
def test_confirm_validation(client, body, field):
    assert field in assert_problem(client.post(CONFIRM, json=body), 422)["errors"]


def test_requests_are_limited_like_login(make_app):
    limited = make_app(RATELIMIT_ENABLED="true", RATELIMIT_LOGIN="3/minute", RATELIMIT_LOGIN_ACCOUNT="2/minute")
    client = limited.test_client()
    statuses = [client.post(RESET, json={"email": "zed@example.com"}).status_code for _ in range(3)]
    assert statuses == [202, 202, 429]  # per IP and email: 2 a minute
    # Another address has its own budget, but this IP has spent its 3 of the minute.
    assert client.post(RESET, json={"email": "yan@example.com"}).status_code == 429
    confirms = [client.post(CONFIRM, json={"token": "x", "new_password": NEW_PASSWORD}).status_code for _ in range(4)]
    assert confirms == [422, 422, 422, 429]


def test_many_addresses_cannot_flood_one_inbox(make_app):
    limited = make_app(RATELIMIT_ENABLED="true", RATELIMIT_LOGIN="100/minute", RATELIMIT_LOGIN_ACCOUNT="100/minute",
                       RATELIMIT_PASSWORD_RESET_ADDRESS="2/hour")
    statuses = [limited.test_client().post(RESET, json={"email": "vic@example.com"},
                                           environ_base={"REMOTE_ADDR": f"203.0.113.{n}"}).status_code
                for n in range(1, 4)]
    assert statuses == [202, 202, 429]  # three addresses, one inbox
    other = limited.test_client().post(RESET, json={"email": "someone@example.com"},
                                       environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert other.status_code == 202


def test_the_link_template_may_hold_other_braces(make_app, sink):
    app = make_app(SMTP_URL=f"smtp://127.0.0.1:{sink.port}",
                   PASSWORD_RESET_URL="https://app.example.com/{lang}/reset?token={token}")
    client = app.test_client()
    register(client, "dee@example.com")
    request_reset(client, "dee@example.com")
    assert send_queued(app) == ["sent"]
    body = sink.messages()[0].get_content()
    assert re.search(r"https://app\.example\.com/\{lang\}/reset\?token=[A-Za-z0-9_-]{40,}", body), body
