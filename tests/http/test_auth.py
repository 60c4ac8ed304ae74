"""Auth: registration, login, token shape, forged tokens, rotation, revocation, account changes."""

from __future__ import annotations

import base64
import json
import statistics
import time
import uuid

import jwt as pyjwt
import pytest

from taskapi.extensions import get_db
from tests.helpers import PASSWORD, assert_problem, assert_unauthorized, bearer, claims_of, header_of, login, register

ME = "/api/v1/auth/me"


# --- registration --------------------------------------------------------------------------

def test_register_creates_user_with_location(client):
    response = client.post("/api/v1/auth/register",
                           json={"email": "  Ada@Example.COM ", "password": PASSWORD, "name": " Ada "})
    assert response.status_code == 201
    user = response.get_json()
    assert set(user) == {"id", "email", "name", "role", "active", "created_at"}
    assert (user["email"], user["name"], user["role"], user["active"]) == ("ada@example.com", "Ada", "user", True)
    assert len(user["id"]) == 24 and user["created_at"].endswith("Z")
    assert response.headers["Location"] == f"/api/v1/users/{user['id']}"
    stored = get_db().users.find_one({"email": "ada@example.com"})
    assert stored["password_hash"].startswith("$argon2id$") and PASSWORD not in stored["password_hash"]


def test_register_taken_email_is_409_whatever_the_case(client):
    register(client, "ada@example.com")
    body = assert_problem(client.post("/api/v1/auth/register", json={"email": "ADA@example.com ", "password": PASSWORD}), 409)
    assert "already exists" in body["detail"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"password": PASSWORD}, "email"),
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": {"$ne": None}, "password": PASSWORD}, "email"),
        ({"email": "a@example.com", "password": "short12"}, "password"),
        ({"email": "a@example.com", "password": "x" * 129}, "password"),
        ({"email": "a@example.com", "password": 12345678}, "password"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "n" * 101}, "name"),
        ({"email": "a@example.com", "password": PASSWORD, "role": "admin"}, "role"),
        ({"email": "a@example.com", "password": PASSWORD, "active": False}, "active"),
        ({"email": "a@example.com", "password": PASSWORD, "id": "6b0cf4e5d9870db21da3bdfa"}, "id"),
    ],
)
def test_register_validation(client, payload, field):
    body = assert_problem(client.post("/api/v1/auth/register", json=payload), 422)
    assert field in body["errors"]
    assert get_db().users.count_documents({}) == 0


# --- login and token shape ---------------------------------------------------------------

def test_login_returns_pair_with_pinned_claims(client, app):
    user = register(client, "ada@example.com")
    response = client.post("/api/v1/auth/login", json={"email": "ADA@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    pair = response.get_json()
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
    access, refresh = claims_of(pair["access_token"]), claims_of(pair["refresh_token"])
    assert header_of(pair["access_token"])["alg"] == "HS256"
    for claims, kind, life in ((access, "access", 900), (refresh, "refresh", 2_592_000)):
        assert claims["sub"] == user["id"] and isinstance(claims["sub"], str)
        assert claims["type"] == kind and claims["iss"] == "taskapi"
        assert claims["exp"] - claims["iat"] == life and claims["nbf"] == claims["iat"]
        assert claims["jti"] and claims["sid"] and claims["gen"] == 0
    assert access["sid"] == refresh["sid"] and access["jti"] != refresh["jti"]


def test_bad_credentials_are_one_answer(client, admin_tokens):
    register(client, "ada@example.com")
    register(client, "gone@example.com")
    gone = client.get("/api/v1/users?email=gone@example.com", headers=bearer(admin_tokens["access_token"])).get_json()
    client.patch(f"/api/v1/users/{gone['items'][0]['id']}", json={"active": False},
                 headers=bearer(admin_tokens["access_token"]))
    answers = []
    for email, password in (("nobody@example.com", PASSWORD), ("ada@example.com", "wrong password"),
                            ("gone@example.com", PASSWORD)):
        response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
        body = assert_unauthorized(response)
        answers.append({k: v for k, v in body.items() if k != "request_id"})
    assert answers[0] == answers[1] == answers[2]


def test_unknown_email_costs_what_a_wrong_password_costs(make_app):
    """The dummy verification keeps the two cases apart by less than a factor of two."""
    application = make_app(ARGON2_TIME_COST="3", ARGON2_MEMORY_KIB="65536", ARGON2_PARALLELISM="4")
    client = application.test_client()
    register(client, "timing@example.com")

    def median_ms(email, password):
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            assert client.post("/api/v1/auth/login", json={"email": email, "password": password}).status_code == 401
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    unknown, wrong = median_ms("nobody@example.com", PASSWORD), median_ms("timing@example.com", "wrong password")
    assert 0.5 < unknown / wrong < 2, (unknown, wrong)


def test_login_rehashes_when_parameters_change(client, make_app):
    register(client, "ada@example.com")
    before = get_db().users.find_one({"email": "ada@example.com"})["password_hash"]
    assert ",t=1," in before
    stronger = make_app(ARGON2_TIME_COST="2").test_client()
    login(stronger, "ada@example.com")
    after = get_db().users.find_one({"email": "ada@example.com"})["password_hash"]
    assert ",t=2," in after and after != before
    login(stronger, "ada@example.com")  # the new hash verifies


# --- forged and misused tokens -------------------------------------------------------------

def forge(app, claims_from: str, *, key: str | None = None, algorithm: str = "HS256", **changes) -> str:
    claims = {**claims_of(claims_from), **changes}
    return pyjwt.encode(claims, key or app.config["JWT_SECRET_KEY"], algorithm=algorithm)


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def last_char_variant(token: str) -> str:
    """The signature with its last character's unused low bits set: it decodes to the same bytes."""
    head, payload, signature = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 4, 3: 2}[len(signature) % 4]  # bits of the last character that carry nothing
    last = alphabet.index(signature[-1])
    variant = signature[:-1] + alphabet[last | ((1 << unused) - 1)]
    assert variant != signature and base64.urlsafe_b64decode(variant + "=" * (-len(variant) % 4)) == \
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return f"{head}.{payload}.{variant}"


def test_valid_access_token_works(client, user_tokens):
    assert client.get(ME, headers=bearer(user_tokens["access_token"])).get_json()["email"] == "ada@example.com"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize(
    "make_header",
    [
        lambda app, t: {},
        lambda app, t: {"Authorization": ""},
        lambda app, t: {"Authorization": "Bearer"},
        lambda app, t: {"Authorization": "Bearer not-a-jwt"},
        lambda app, t: {"Authorization": f"Basic {t['access_token']}"},
        lambda app, t: {"Authorization": f"Bearer {t['access_token'].rsplit('.', 1)[0]}."},  # signature stripped
        lambda app, t: {"Authorization": f"Bearer {b64({'alg': 'none', 'typ': 'JWT'})}."
                                         f"{t['access_token'].split('.')[1]}."},  # alg: none
        lambda app, t: bearer(forge(app, t["access_token"], key="another-secret-" + "z" * 40)),  # wrong key
        lambda app, t: bearer(forge(app, t["access_token"], algorithm="HS512")),  # not the pinned alg
        lambda app, t: bearer(forge(app, t["access_token"], exp=int(time.time()) - 5)),  # expired
        lambda app, t: bearer(forge(app, t["access_token"], nbf=int(time.time()) + 600)),  # not yet valid
        lambda app, t: bearer(forge(app, t["access_token"], iss="someone-else")),
        lambda app, t: bearer(t["access_token"][:-4] + ("AAAA" if not t["access_token"].endswith("AAAA") else "BBBB")),
        lambda app, t: bearer(t["refresh_token"]),  # refresh used as access
        lambda app, t: bearer(forge(app, t["access_token"], sid=None, gen=None)),  # not one of our sessions
        lambda app, t: bearer(forge(app, t["access_token"], sid=uuid.uuid4().hex)),  # unknown session
        lambda app, t: bearer(forge(app, t["access_token"], gen=1)),  # another generation
        lambda app, t: bearer(t["access_token"] + "="),  # padded signature
        lambda app, t: bearer(t["access_token"] + "A"),  # trailing junk in the signature
        lambda app, t: bearer(last_char_variant(t["access_token"])),  # same bytes, another spelling
        lambda app, t: bearer(t["access_token"].replace(".", "=.", 1)),  # padded header
        lambda app, t: bearer(forge(app, t["access_token"], aud="someone-else")),
    ],
    ids=["none", "empty", "bearer-only", "garbage", "basic", "stripped-signature", "alg-none", "wrong-key",
         "hs512", "expired", "future-nbf", "wrong-issuer", "bad-signature", "refresh-as-access", "no-session",
         "unknown-session", "wrong-generation", "padded-signature", "signature-junk", "signature-variant",
         "padded-header", "wrong-audience"],
)
def test_bad_tokens_are_401_problem(app, client, user_tokens, make_header):
    body = assert_unauthorized(client.get(ME, headers=make_header(app, user_tokens)))
    assert "Traceback" not in body["detail"]


def test_token_in_query_string_is_ignored(client, user_tokens):
    assert_unauthorized(client.get(f"{ME}?jwt={user_tokens['access_token']}"))
    assert_unauthorized(client.get(f"{ME}?access_token={user_tokens['access_token']}"))


def test_access_token_is_refused_by_refresh(client, user_tokens):
    body = assert_unauthorized(client.post("/api/v1/auth/refresh", headers=bearer(user_tokens["access_token"])))
    assert "refresh token" in body["detail"]


def test_missing_token_challenge_has_no_error_code(client):
    response = client.get(ME)
    assert_unauthorized(response)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="taskapi"'
    assert "invalid_token" in client.get(ME, headers=bearer("x.y.z")).headers["WWW-Authenticate"]


# --- rotation, logout, logout-all ----------------------------------------------------------

def refresh(client, token):
    return client.post("/api/v1/auth/refresh", headers=bearer(token))


def test_refresh_rotates_and_reuse_revokes_the_family(client, user_tokens):
    other_session = login(client, "ada@example.com")
    first = refresh(client, user_tokens["refresh_token"])
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-store"
    rotated = first.get_json()
    assert claims_of(rotated["access_token"])["sid"] == claims_of(user_tokens["access_token"])["sid"]
    assert client.get(ME, headers=bearer(rotated["access_token"])).status_code == 200

    reuse = refresh(client, user_tokens["refresh_token"])  # theft: the old one comes back
    assert "already used" in assert_unauthorized(reuse)["detail"]
    for token in (rotated["access_token"], user_tokens["access_token"]):
        assert_unauthorized(client.get(ME, headers=bearer(token)))
    assert_unauthorized(refresh(client, rotated["refresh_token"]))
    # Another login's family is untouched.
    assert client.get(ME, headers=bearer(other_session["access_token"])).status_code == 200
    assert refresh(client, other_session["refresh_token"]).status_code == 200


def test_each_refresh_token_works_once_in_a_chain(client, user_tokens):
    token = user_tokens["refresh_token"]
    for _ in range(3):
        pair = refresh(client, token).get_json()
        token = pair["refresh_token"]
    assert client.get(ME, headers=bearer(pair["access_token"])).status_code == 200


def test_logout_revokes_token_and_session_only(client, user_tokens):
    other = login(client, "ada@example.com")
    response = client.post("/api/v1/auth/logout", headers=bearer(user_tokens["access_token"]))
    assert response.status_code == 204 and response.get_data() == b""
    assert "revoked" in assert_unauthorized(client.get(ME, headers=bearer(user_tokens["access_token"])))["detail"]
    assert_unauthorized(refresh(client, user_tokens["refresh_token"]))
    assert client.get(ME, headers=bearer(other["access_token"])).status_code == 200


def test_logout_all_kills_every_session_and_a_login_right_after_works(client, user_tokens):
    second = login(client, "ada@example.com")
    assert client.post("/api/v1/auth/logout-all", headers=bearer(second["access_token"])).status_code == 204
    fresh = login(client, "ada@example.com")  # same second as the logout-all
    for pair in (user_tokens, second):
        assert_unauthorized(client.get(ME, headers=bearer(pair["access_token"])))
        assert_unauthorized(refresh(client, pair["refresh_token"]))
    assert client.get(ME, headers=bearer(fresh["access_token"])).status_code == 200
    assert refresh(client, fresh["refresh_token"]).status_code == 200


def test_refresh_token_cannot_log_out(client, user_tokens):
    assert_unauthorized(client.post("/api/v1/auth/logout", headers=bearer(user_tokens["refresh_token"])))
    assert client.get(ME, headers=bearer(user_tokens["access_token"])).status_code == 200


# --- the caller's account ------------------------------------------------------------------

def test_me_and_patch_name(client, user_tokens):
    headers = bearer(user_tokens["access_token"])
    me = client.get(ME, headers=headers)
    assert me.headers["Cache-Control"] == "no-store" and "Authorization" in me.headers["Vary"]
    updated = client.patch(ME, json={"name": "  Ada King "}, headers=headers)
    assert updated.status_code == 200 and updated.get_json()["name"] == "Ada King"
    assert client.get(ME, headers=headers).get_json()["name"] == "Ada King"


@pytest.mark.parametrize("payload", [{"email": "x@example.com"}, {"role": "admin"}, {"name": "ok", "active": True},
                                     {"name": 5}, {}])
def test_patch_me_refuses_other_fields(client, user_tokens, payload):
    response = client.patch(ME, json=payload, headers=bearer(user_tokens["access_token"]))
    assert_problem(response, 422)
    assert client.get(ME, headers=bearer(user_tokens["access_token"])).get_json()["role"] == "user"


def test_password_change(client, user_tokens):
    headers = bearer(user_tokens["access_token"])
    wrong = client.post("/api/v1/auth/password", json={"current_password": "nope nope", "new_password": "n3w password"},
                        headers=headers)
    assert "current_password" in assert_problem(wrong, 422)["errors"]
    same = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": PASSWORD},
                       headers=headers)
    assert "new_password" in assert_problem(same, 422)["errors"]
    short = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": "short"},
                        headers=headers)
    assert "new_password" in assert_problem(short, 422)["errors"]

    ok = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": "n3w password"},
                     headers=headers)
    assert ok.status_code == 204
    assert_unauthorized(client.get(ME, headers=headers))
    assert_unauthorized(refresh(client, user_tokens["refresh_token"]))
    assert_unauthorized(client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}))
    assert client.get(ME, headers=bearer(login(client, "ada@example.com", "n3w password")["access_token"])).status_code == 200


# --- admin ----------------------------------------------------------------------------------

def test_admin_routes_are_403_for_users(client, user_tokens, admin_tokens):
    headers = bearer(user_tokens["access_token"])
    me = client.get(ME, headers=headers).get_json()
    assert_problem(client.get("/api/v1/users", headers=headers), 403)
    assert_problem(client.get(f"/api/v1/users/{me['id']}", headers=headers), 403)
    assert_problem(client.patch(f"/api/v1/users/{me['id']}", json={"role": "admin"}, headers=headers), 403)
    assert client.get(ME, headers=headers).get_json()["role"] == "user"


def test_admin_lists_users_with_keyset_pages(client, admin_tokens):
    headers = bearer(admin_tokens["access_token"])
    for i in range(5):
        register(client, f"user{i}@example.com")
    seen, cursor, pages = [], None, 0
    while True:
        url = "/api/v1/users?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        page = response.get_json()
        seen += [u["email"] for u in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            assert "Link" not in response.headers
            break
        assert response.headers["Link"].endswith('rel="next"') and "limit=2" in response.headers["Link"]
    assert pages == 3 and len(seen) == len(set(seen)) == 6  # five users and the admin
    exact = client.get("/api/v1/users?email=USER3@example.com", headers=headers).get_json()
    assert [u["email"] for u in exact["items"]] == ["user3@example.com"] and exact["next_cursor"] is None


def test_admin_list_rejects_bad_arguments(client, admin_tokens):
    headers = bearer(admin_tokens["access_token"])
    for i in range(3):
        register(client, f"user{i}@example.com")
    cursor = client.get("/api/v1/users?limit=1", headers=headers).get_json()["next_cursor"]
    assert "cursor" in assert_problem(client.get(f"/api/v1/users?limit=1&cursor={cursor[:-2]}xx", headers=headers), 422)["errors"]
    assert "cursor" in assert_problem(
        client.get(f"/api/v1/users?limit=1&email=user1@example.com&cursor={cursor}", headers=headers), 422)["errors"]
    for query in ("limit=0", "limit=101", "limit=abc", "sort=email", "email[$ne]=x"):
        assert_problem(client.get(f"/api/v1/users?{query}", headers=headers), 422)


def test_admin_get_and_patch(client, admin_tokens, user_tokens):
    headers = bearer(admin_tokens["access_token"])
    user_id = client.get(ME, headers=bearer(user_tokens["access_token"])).get_json()["id"]
    assert client.get(f"/api/v1/users/{user_id}", headers=headers).get_json()["email"] == "ada@example.com"
    for bad in ("not-an-id", "6b0cf4e5d9870db21da3bdfa", "0" * 25):
        assert_problem(client.get(f"/api/v1/users/{bad}", headers=headers), 404)
    promoted = client.patch(f"/api/v1/users/{user_id}", json={"role": "admin"}, headers=headers)
    assert promoted.status_code == 200 and promoted.get_json()["role"] == "admin"
    for payload in ({"role": "root"}, {"active": "false"}, {"active": 0}, {"email": "x@example.com"}):
        assert_problem(client.patch(f"/api/v1/users/{user_id}", json=payload, headers=headers), 422)


def test_role_changes_apply_on_the_next_request(client, admin_tokens):
    """Tokens carry the role, so a role change revokes the tokens that carry the old one."""
    headers = bearer(admin_tokens["access_token"])
    register(client, "second@example.com")
    second = login(client, "second@example.com")
    second_id = client.get(ME, headers=bearer(second["access_token"])).get_json()["id"]
    assert client.patch(f"/api/v1/users/{second_id}", json={"role": "admin"}, headers=headers).status_code == 200
    assert_unauthorized(client.get("/api/v1/users", headers=bearer(second["access_token"])))
    assert_unauthorized(client.post("/api/v1/auth/refresh", headers=bearer(second["refresh_token"])))
    promoted = login(client, "second@example.com")
    assert client.get("/api/v1/users", headers=bearer(promoted["access_token"])).status_code == 200
    client.patch(f"/api/v1/users/{second_id}", json={"role": "user"}, headers=headers)
    assert_unauthorized(client.get("/api/v1/users", headers=bearer(promoted["access_token"])))
    assert_problem(client.get("/api/v1/users", headers=bearer(login(client, "second@example.com")["access_token"])), 403)


def test_admin_cannot_demote_or_deactivate_self(client, admin_tokens):
    headers = bearer(admin_tokens["access_token"])
    me = client.get(ME, headers=headers).get_json()
    assert_problem(client.patch(f"/api/v1/users/{me['id']}", json={"role": "user"}, headers=headers), 409)
    assert_problem(client.patch(f"/api/v1/users/{me['id']}", json={"active": False}, headers=headers), 409)
    assert client.get("/api/v1/users", headers=headers).status_code == 200


def test_deactivation_kills_tokens_at_once_and_reactivation_allows_login(client, admin_tokens, user_tokens):
    headers = bearer(admin_tokens["access_token"])
    user_id = client.get(ME, headers=bearer(user_tokens["access_token"])).get_json()["id"]
    off = client.patch(f"/api/v1/users/{user_id}", json={"active": False}, headers=headers)
    assert off.get_json()["active"] is False
    assert_unauthorized(client.get(ME, headers=bearer(user_tokens["access_token"])))
    assert_unauthorized(refresh(client, user_tokens["refresh_token"]))
    assert_unauthorized(client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}))
    client.patch(f"/api/v1/users/{user_id}", json={"active": True}, headers=headers)
    assert client.get(ME, headers=bearer(login(client, "ada@example.com")["access_token"])).status_code == 200
    assert_unauthorized(client.get(ME, headers=bearer(user_tokens["access_token"])))  # old ones stay dead


# --- CLI ----------------------------------------------------------------------------------

def test_create_admin_creates_then_promotes(client, runner):
    created = runner.invoke(args=["users", "create-admin", "--email", "Boss@Example.com", "--password", PASSWORD])
    assert created.exit_code == 0 and created.output.startswith("created admin boss@example.com")
    register(client, "ada@example.com")
    promoted = runner.invoke(args=["users", "create-admin", "--email", "ada@example.com", "--password", "other password"])
    assert promoted.exit_code == 0 and "promoted ada@example.com" in promoted.output
    tokens = login(client, "ada@example.com")  # password unchanged
    assert client.get("/api/v1/users", headers=bearer(tokens["access_token"])).status_code == 200
    bad = runner.invoke(args=["users", "create-admin", "--email", "nope", "--password", PASSWORD])
    assert bad.exit_code == 2 and "email" in bad.output


# --- indexes --------------------------------------------------------------------------------

def test_declared_user_indexes_exist_after_migrations(app):
    from taskapi.models.user import User

    existing = {spec["name"]: spec for spec in get_db().users.list_indexes()}
    for declared in User._meta["indexes"]:
        assert declared["name"] in existing
        assert list(existing[declared["name"]]["key"].keys()) == declared["fields"]
        assert existing[declared["name"]].get("unique", False) == declared.get("unique", False)


# --- revocation racing a login ----------------------------------------------------------------

@pytest.mark.parametrize("revocation", ["deactivate", "logout-all"])
def test_revocation_during_a_login_leaves_no_working_token(make_app, revocation):
    """The revocation lands while the login's argon2 check runs (production cost, ~150 ms)."""
    import threading

    application = make_app(ARGON2_TIME_COST="3", ARGON2_MEMORY_KIB="65536", ARGON2_PARALLELISM="4")
    client = application.test_client()
    register(client, "racer@example.com")
    assert application.test_cli_runner().invoke(
        args=["users", "create-admin", "--email", "boss@example.com", "--password", PASSWORD]).exit_code == 0
    admin = bearer(login(client, "boss@example.com")["access_token"])
    own = bearer(login(client, "racer@example.com")["access_token"])
    user_id = client.get(ME, headers=own).get_json()["id"]
    outcome = {}

    def slow_login():
        outcome["response"] = application.test_client().post(
            "/api/v1/auth/login", json={"email": "racer@example.com", "password": PASSWORD})

    thread = threading.Thread(target=slow_login)
    thread.start()
    time.sleep(0.05)  # the login is inside its password check now
    if revocation == "deactivate":
        assert client.patch(f"/api/v1/users/{user_id}", json={"active": False}, headers=admin).status_code == 200
    else:
        assert client.post("/api/v1/auth/logout-all", headers=own).status_code == 204
    thread.join(10)
    response = outcome["response"]
    if response.status_code == 200:  # it may finish, but what it issued must already be dead
        pair = response.get_json()
        assert_unauthorized(client.get(ME, headers=bearer(pair["access_token"])))
        assert_unauthorized(client.post("/api/v1/auth/refresh", headers=bearer(pair["refresh_token"])))
    else:
        assert_unauthorized(response)


def test_the_decoy_hash_is_made_with_the_app_not_on_the_first_unknown_email_login(make_app):
    """Built lazily, the decoy made each worker's first unknown-email login cost a hash and a
    verification (about twice a wrong password's time): that login told the two apart."""
    fresh = make_app()
    decoy = fresh.extensions["dummy_password_hash"]  # before any request
    assert decoy.startswith("$argon2id$") and f"m={fresh.config['ARGON2_MEMORY_KIB']}," in decoy
    response = fresh.test_client().post("/api/v1/auth/login", json={"email": "nobody@example.com",
                                                                     "password": "whatever it is"})
    assert response.status_code == 401
    assert fresh.extensions["dummy_password_hash"] == decoy  # the same decoy, not made on demand
