"""RS256 and ES256 tokens: keys in JWT_PRIVATE_KEYS, the JWK set at /.well-known/jwks.json,
`keys rotate`, and forged tokens (unknown kid, another key, another algorithm, none): all 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from config import ROOT, ConfigError
from taskapi.services import keys
from tests.helpers import assert_problem, bearer, login, register

JWKS = "/.well-known/jwks.json"
ME = "/api/v1/auth/me"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
PUBLIC_MEMBERS = {"RS256": {"kty", "kid", "use", "alg", "n", "e"}, "ES256": {"kty", "kid", "use", "alg", "crv", "x", "y"}}


def header_of(token: str) -> dict:
    return jwt.get_unverified_header(token)


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def rotate(app) -> str:
    """`flask --app wsgi keys rotate` through the app's CLI; returns the new kid."""
    result = app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    assert "added" in result.output and "kill -HUP" in result.output
    return result.output.split("kid ")[1].split(")")[0]


@pytest.fixture(params=["RS256", "ES256"])
def signed(request, make_app, tmp_path):
    """An app signing with `algorithm`, its key made by `keys rotate` into an empty directory."""
    algorithm, folder = request.param, tmp_path / "keys"
    first = make_app(JWT_ALGORITHM=algorithm, JWT_PRIVATE_KEYS=str(folder), JWT_KEY_ACTIVATION_SECONDS="0")
    kid = rotate(first)
    app = make_app(JWT_ALGORITHM=algorithm, JWT_PRIVATE_KEYS=str(folder))  # a reload: the key signs
    return app, algorithm, kid, folder


def log_in(app, email="kim@example.com") -> str:
    client = app.test_client()
    register(client, email)
    return login(client, email)["access_token"]


def test_tokens_carry_the_kid_of_a_public_key_the_jwk_set_lists(signed):
    app, algorithm, kid, _ = signed
    token = log_in(app)
    assert header_of(token)["alg"] == algorithm and header_of(token)["kid"] == kid
    response = app.test_client().get(JWKS)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "public, max-age=300"
    [jwk] = response.get_json()["keys"]
    assert set(jwk) == PUBLIC_MEMBERS[algorithm] and not set(jwk) & PRIVATE_MEMBERS
    assert (jwk["kid"], jwk["use"], jwk["alg"]) == (kid, "sig", algorithm)
    # Anyone holding the JWK set verifies the token without us (PyJWT, from the published key).
    verified = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[algorithm], audience="taskapi", issuer="taskapi")
    assert verified["sub"] == claims_of(token)["sub"]
    assert app.test_client().get(ME, headers=bearer(token)).status_code == 200
    refreshed = app.test_client().post("/api/v1/auth/refresh", headers=bearer(login_pair(app)["refresh_token"]))
    assert refreshed.status_code == 200 and header_of(refreshed.get_json()["access_token"])["kid"] == kid


def login_pair(app, email="kim@example.com") -> dict:
    return login(app.test_client(), email)


def forge(token: str, key, algorithm: str, **header) -> str:
    return jwt.encode(claims_of(token), key, algorithm=algorithm, headers=header)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hmac_token(token: str, secret: bytes, kid: object) -> str:
    """The classic confusion: HS256 keyed with the public key (PyJWT refuses to make one)."""
    signing_input = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + "." + token.split(".")[1]
    return signing_input + "." + b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def test_forged_tokens_are_401_never_500(signed):
    app, algorithm, kid, folder = signed
    token = log_in(app)
    other = keys.new_private_key(algorithm)
    other_kid = keys.public_jwk(other.public_key(), algorithm)["kid"]
    public_pem = next(folder.glob("*.pem")).read_bytes()
    public_pem = serialization.load_pem_private_key(public_pem, None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    unsigned = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode()) + "." + token.split(".")[1] + "."
    forged = {
        "unknown kid": forge(token, other, algorithm, kid=other_kid),
        "another key claiming our kid": forge(token, other, algorithm, kid=kid),
        "no kid": forge(token, other, algorithm),
        "HS256 keyed with our public key": hmac_token(token, public_pem, kid),
        "alg none": unsigned,
        "the other asymmetric algorithm": forge(token, keys.new_private_key("ES256" if algorithm == "RS256"
                                                                           else "RS256"),
                                                "ES256" if algorithm == "RS256" else "RS256", kid=kid),
        "kid not a string": hmac_token(token, b"x", ["x"]),
    }
    client = app.test_client()
    for case, bad in forged.items():
        response = client.get(ME, headers=bearer(bad))
        assert response.status_code == 401, (case, response.status_code)
        assert_problem(response, 401)
    assert client.get(ME, headers=bearer(token)).status_code == 200  # the real one still works


def test_rotation_keeps_issued_tokens_working_and_new_ones_carry_the_new_kid(signed, make_app):
    app, algorithm, old_kid, folder = signed
    old_token = log_in(app)
    new_kid = rotate(app)
    assert new_kid != old_kid
    reloaded = make_app(JWT_ALGORITHM=algorithm, JWT_PRIVATE_KEYS=str(folder))
    client = reloaded.test_client()
    assert client.get(ME, headers=bearer(old_token)).status_code == 200
    new_token = login_pair(reloaded)["access_token"]
    assert header_of(new_token)["kid"] == new_kid
    assert [k["kid"] for k in client.get(JWKS).get_json()["keys"]] == [new_kid, old_kid]  # the newest first
    listed = reloaded.test_cli_runner().invoke(args=["keys", "list"]).output.splitlines()
    assert listed[0].startswith(f"{new_kid}  signs+verifies") and listed[1].startswith(f"{old_kid}  verifies")
    # Once the old key's file is gone (and the app reloaded), its tokens stop working.
    for path in folder.glob("*.pem"):
        if keys.load_keyring(folder, algorithm).keys[0].path == path:
            path.unlink()
            break
    pruned = make_app(JWT_ALGORITHM=algorithm, JWT_PRIVATE_KEYS=str(folder)).test_client()
    assert pruned.get(ME, headers=bearer(old_token)).status_code == 401
    assert pruned.get(ME, headers=bearer(new_token)).status_code == 200


def test_hs256_publishes_no_key(client):
    response = client.get(JWKS)
    assert response.status_code == 200 and response.get_json() == {"keys": []}


def test_without_a_key_logins_are_503_and_rotate_explains_hs256(make_app, tmp_path, client):
    empty = make_app(JWT_ALGORITHM="RS256", JWT_PRIVATE_KEYS=str(tmp_path / "none"))
    register(empty.test_client(), "lee@example.com")
    response = empty.test_client().post("/api/v1/auth/login",
                                        json={"email": "lee@example.com", "password": "correct horse battery"})
    assert_problem(response, 503)
    assert empty.test_client().get(JWKS).get_json() == {"keys": []}
    hs = client.application.test_cli_runner().invoke(args=["keys", "rotate"])
    assert hs.exit_code != 0 and "HMAC" in hs.output


@pytest.mark.parametrize(("algorithm", "content", "message"), [
    ("RS256", b"not a key", "not an unencrypted PEM private key"),
    ("ES256", None, "ES256 needs an EC key on P-256"),
    ("RS256", "dangling", "JWT_PRIVATE_KEYS: "),
    ("RS256", "directory", "cannot be read"),
])
def test_an_unusable_key_file_stops_the_start_naming_it(make_app, tmp_path, algorithm, content, message):
    folder = tmp_path / "keys"
    if content is None:
        keys.add_key(folder, "RS256")
    elif content == "dangling":
        keys.add_key(folder, "RS256")
        (folder / "gone.pem").symlink_to(tmp_path / "nowhere.pem")
    elif content == "directory":
        keys.add_key(folder, "RS256")
        (folder / "adir.pem").mkdir()
    else:
        folder.mkdir()
        (folder / "broken.pem").write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        make_app(JWT_ALGORITHM=algorithm, JWT_PRIVATE_KEYS=str(folder))


def test_rs256_needs_a_key_directory(make_app, monkeypatch):
    monkeypatch.delenv("JWT_PRIVATE_KEYS", raising=False)
    with pytest.raises(ConfigError, match="JWT_PRIVATE_KEYS"):
        make_app(JWT_ALGORITHM="RS256")


def test_gunicorn_refuses_to_start_without_a_key(app_env, tmp_path):
    env = {**os.environ, **app_env, "TASKAPI_ENV": "production", "JWT_ALGORITHM": "ES256",
           "JWT_PRIVATE_KEYS": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "gunicorn", "--check-config", "-c", "gunicorn.conf.py", "wsgi:app"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "JWT_PRIVATE_KEYS" in result.stderr and "keys rotate" in result.stderr


def test_keys_are_written_for_their_owner_only(tmp_path):
    key = keys.add_key(tmp_path / "k", "ES256")
    assert oct(key.path.stat().st_mode & 0o777) == "0o600" and Path(key.path).read_bytes().startswith(b"-----BEGIN")


def test_a_fetched_jwk_set_yields_only_public_keys_of_the_configured_algorithm():
    rsa_key, ec_key = keys.new_private_key("RS256"), keys.new_private_key("ES256")
    public = keys.public_jwk(rsa_key.public_key(), "RS256")
    private = {**jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key, as_dict=True), "kid": "with-d", "alg": "RS256"}
    other_alg = keys.public_jwk(ec_key.public_key(), "ES256")
    document = json.dumps({"keys": [public, private, other_alg, {"kid": "broken", "alg": "RS256", "kty": "RSA"},
                                    "not a key"]}).encode()
    assert set(keys.parse_jwks(document, "RS256")) == {public["kid"]}
    assert set(keys.parse_jwks(document, "ES256")) == {other_alg["kid"]}
    with pytest.raises(ValueError):
        keys.parse_jwks(b'{"no": "keys"}', "RS256")


def test_a_new_key_is_published_at_once_and_signs_only_after_the_activation_delay(signed, make_app):
    app, algorithm, old_kid, folder = signed
    [old_file] = folder.glob("*.pem")
    os.utime(old_file, (time.time() - 86400, time.time() - 86400))  # a key in use for a day
    new_kid = rotate(app)
    added = time.time()
    waiting = make_app(JWT_ALGORITHM=algorithm, JWT_PRIVATE_KEYS=str(folder), JWT_KEY_ACTIVATION_SECONDS="2")
    client = waiting.test_client()
    assert [k["kid"] for k in client.get(JWKS).get_json()["keys"]] == [new_kid, old_kid]  # verifiers can fetch it
    assert header_of(log_in(waiting))["kid"] == old_kid  # the old key still signs
    listed = waiting.test_cli_runner().invoke(args=["keys", "list"]).output.splitlines()
    assert listed[0].startswith(f"{new_kid}  verifies") and listed[1].startswith(f"{old_kid}  signs+verifies")
    time.sleep(max(0.0, added + 2.2 - time.time()))
    assert header_of(login_pair(waiting)["access_token"])["kid"] == new_kid  # no reload needed


def test_a_signature_checked_once_still_has_its_expiry_and_revocation_checked_each_time(signed, make_app):
    _, algorithm, _, folder = signed
    short = make_app(JWT_ALGORITHM=algorithm, JWT_PRIVATE_KEYS=str(folder), ACCESS_TOKEN_TTL_SECONDS="2")
    client = short.test_client()
    register(client, "ed@example.com")
    expiring, revoked = (login(client, "ed@example.com")["access_token"] for _ in range(2))
    for token in (expiring, revoked):
        assert client.get(ME, headers=bearer(token)).status_code == 200  # verified (and remembered)
    assert client.post("/api/v1/auth/logout", headers=bearer(revoked)).status_code == 204
    assert client.get(ME, headers=bearer(revoked)).status_code == 401
    time.sleep(max(0.0, claims_of(expiring)["exp"] - time.time()) + 0.1)
    response = client.get(ME, headers=bearer(expiring))
    assert response.status_code == 401 and "expired" in assert_problem(response, 401)["detail"]


def test_moving_from_hs256_logs_nobody_out_until_the_deadline(make_app, tmp_path):
    """JWT_ACCEPT_HS256_UNTIL: after the switch to RS256, a refresh token issued under HS256 (the
    same JWT_SECRET_KEY) is exchanged for an RS256 pair, so nobody logs in again; an HS256 access
    token is 401 (the client refreshes). After the deadline the refresh is 401 too. An HS256 token
    keyed with the public key, or minted with the secret for another user's session, is refused."""
    monolith = make_app()  # HS256
    for email in ("moving@example.com", "later@example.com", "victim@example.com"):
        register(monolith.test_client(), email)
    old = login_pair(monolith, "moving@example.com")  # issued by the HS256 monolith
    second = login_pair(monolith, "later@example.com")
    assert header_of(old["access_token"])["alg"] == "HS256"
    folder = tmp_path / "keys"
    rotate(make_app(JWT_ALGORITHM="RS256", JWT_PRIVATE_KEYS=str(folder), JWT_KEY_ACTIVATION_SECONDS="0"))
    deadline = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    moved = make_app(JWT_ALGORITHM="RS256", JWT_PRIVATE_KEYS=str(folder), JWT_ACCEPT_HS256_UNTIL=deadline)
    client = moved.test_client()
    assert_problem(client.get(ME, headers=bearer(old["access_token"])), 401)
    refreshed = client.post("/api/v1/auth/refresh", headers=bearer(old["refresh_token"]))
    assert refreshed.status_code == 200, refreshed.get_json()
    assert header_of(refreshed.get_json()["access_token"])["alg"] == "RS256"
    assert client.get(ME, headers=bearer(refreshed.get_json()["access_token"])).status_code == 200
    # Whoever holds JWT_SECRET_KEY cannot use the window to mint: an admin access token is refused,
    # and a refresh token naming another user with one's own session is refused.
    secret = moved.config["JWT_SECRET_KEY"].encode()
    mine = claims_of(second["refresh_token"])
    with moved.app_context():
        from taskapi.models.user import users

        victim_id = str(users().find_one({"email": "victim@example.com"})["_id"])
    admin_access = {**claims_of(second["access_token"]), "role": "admin"}
    for claims in (admin_access, {**mine, "sub": victim_id}):
        minted = jwt.encode(claims, secret, algorithm="HS256")
        assert_problem(client.get("/api/v1/users", headers=bearer(minted)), 401)
        assert_problem(client.post("/api/v1/auth/refresh", headers=bearer(minted)), 401)
    public = next(folder.glob("*.pem")).read_bytes()
    key = serialization.load_pem_private_key(public, None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert_problem(client.post("/api/v1/auth/refresh", headers=bearer(hmac_token(second["refresh_token"], key, None))), 401)
    after = make_app(JWT_ALGORITHM="RS256", JWT_PRIVATE_KEYS=str(folder), JWT_ACCEPT_HS256_UNTIL="2020-01-01T00:00:00Z")
    assert_problem(after.test_client().post("/api/v1/auth/refresh", headers=bearer(second["refresh_token"])), 401)


@pytest.mark.parametrize(("settings", "message"), [
    ({"JWT_ACCEPT_HS256_UNTIL": "soon"}, "must be a timestamp"),
    ({"JWT_ACCEPT_HS256_UNTIL": "2999-01-01T00:00:00"}, "needs a time zone"),
    ({"JWT_ACCEPT_HS256_UNTIL": "2026-01-01T00:00:00Z", "JWT_ALGORITHM": "HS256"}, "is for a move to"),
    ({"JWT_ACCEPT_HS256_UNTIL": "2999-01-01T00:00:00Z"}, "later than every HS256 refresh token"),
    ({"JWT_ACCEPT_HS256_UNTIL": "2026-01-01T00:00:00Z", "TASKAPI_SERVICE": "tasks",
      "JWKS_URL": "http://127.0.0.1:1/.well-known/jwks.json"}, "for the service that signs"),
])
def test_the_hs256_deadline_is_checked(make_app, tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        make_app(**{"JWT_ALGORITHM": "RS256", "JWT_PRIVATE_KEYS": str(tmp_path), **settings})


def test_replicas_starting_at_once_make_one_first_key(app_env, tmp_path):
    """`keys ensure` (boot.sh) from four processes at once on one empty directory: one key, made
    once; a later run finds it."""
    folder = tmp_path / "keys"
    env = {**os.environ, **app_env, "TASKAPI_SERVICE": "auth", "JWT_ALGORITHM": "ES256", "JWT_PRIVATE_KEYS": str(folder)}
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "keys", "ensure"]
    runs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    assert sum(output.startswith("added ") for output in outputs) == 1, outputs
    assert len(list(folder.glob("*.pem"))) == 1
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "holds a key already" in again.stdout
    tasks = subprocess.run(command, cwd=ROOT, env={**env, "TASKAPI_SERVICE": "tasks", "JWT_PRIVATE_KEYS": "",
                                                   "JWKS_URL": "http://127.0.0.1:1/.well-known/jwks.json"},
                           capture_output=True, text=True, timeout=60)
    assert tasks.returncode == 0 and "no signing key needed" in tasks.stdout, tasks.stderr
