"""Revocation is never weaker than the write it follows: a Redis that refuses writes (at its
memory limit, a read-only replica) gets the whole change refused with 503, a lost mirror is
restored from MongoDB, refresh re-reads the account, erasure revokes first, the last admin stays."""

from __future__ import annotations

import threading

import pytest
import redis

from taskapi.extensions import get_db
from tests.helpers import PASSWORD, assert_problem, assert_unauthorized, bearer, login, register
from tests.servers import RedisServer

ME = "/api/v1/auth/me"


def fill_to_the_limit(url: str) -> redis.Redis:
    """Junk until Redis (noeviction) is over its memory limit and refuses every write, as it
    did when one user's cache entries had filled it. (At exactly the limit small writes still
    squeeze in now and then, so the limit is then set just below what is used.)"""
    client = redis.Redis.from_url(url)
    for n in range(1000):
        try:
            client.set(f"junk:{n}", b"x" * 65_536)
        except redis.exceptions.OutOfMemoryError:
            break
    client.config_set("maxmemory", client.info("memory")["used_memory"] - 262_144)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.incr("junk:counter")
    return client


def free_the_room(client: redis.Redis, maxmemory: str = "12mb") -> None:
    for key in client.scan_iter("junk:*", count=1000):
        client.delete(key)
    client.config_set("maxmemory", maxmemory)


@pytest.fixture
def small_redis(log_dir):
    server = RedisServer(log_dir, maxmemory="12mb", policy="noeviction").start()
    yield server
    server.stop()


@pytest.fixture
def oom_app(make_app, small_redis):
    application = make_app(REDIS_URL=small_redis.url)
    return application, application.test_client()


def test_a_full_redis_refuses_revoking_changes_whole_and_logout_still_works(oom_app, small_redis):
    app, client = oom_app
    register(client, "ada@example.com")
    register(client, "bob@example.com")
    assert app.test_cli_runner().invoke(args=["users", "create-admin", "--email", "root@example.com",
                                              "--password", PASSWORD]).exit_code == 0
    first, second = login(client, "ada@example.com"), login(client, "ada@example.com")
    admin = bearer(login(client, "root@example.com")["access_token"])
    bob = bearer(login(client, "bob@example.com")["access_token"])
    user = get_db().users.find_one({"email": "ada@example.com"})
    bob_id = str(get_db().users.find_one({"email": "bob@example.com"})["_id"])

    junk = fill_to_the_limit(small_redis.url)
    try:
        refused = [
            client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": "n3w password"},
                        headers=bearer(first["access_token"])),
            client.post("/api/v1/auth/logout-all", headers=bearer(first["access_token"])),
            client.patch(f"/api/v1/users/{user['_id']}", json={"active": False}, headers=admin),
            client.patch(f"/api/v1/users/{bob_id}", json={"role": "admin"}, headers=admin),
        ]
        for response in refused:
            body = assert_problem(response, 503)
            assert "out of memory" in body["detail"] and 0 < int(response.headers["Retry-After"]) <= 5
        # Nothing changed: the same account, and every token still works.
        stored = get_db().users.find_one({"_id": user["_id"]})
        assert (stored["password_hash"], stored["active"], stored.get("token_gen", 0)) == \
               (user["password_hash"], True, user.get("token_gen", 0))
        assert get_db().users.find_one({"email": "bob@example.com"})["role"] == "user"
        for token in (first["access_token"], second["access_token"]):
            assert client.get(ME, headers=bearer(token)).status_code == 200
        assert client.get(ME, headers=bob).status_code == 200
        # Logout needs no memory (DEL): it works, at once.
        assert client.post("/api/v1/auth/logout", headers=bearer(second["access_token"])).status_code == 204
        assert_unauthorized(client.get(ME, headers=bearer(second["access_token"])))
        assert_unauthorized(client.post("/api/v1/auth/refresh", headers=bearer(second["refresh_token"])))
    finally:
        free_the_room(junk)

    # With room again the logged-out session stays dead, and the changes work in full.
    assert_unauthorized(client.post("/api/v1/auth/refresh", headers=bearer(second["refresh_token"])))
    assert client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": "n3w password"},
                       headers=bearer(first["access_token"])).status_code == 204
    assert_unauthorized(client.get(ME, headers=bearer(first["access_token"])))
    assert_unauthorized(client.post("/api/v1/auth/refresh", headers=bearer(first["refresh_token"])))
    fresh = bearer(login(client, "ada@example.com", "n3w password")["access_token"])
    assert client.patch(f"/api/v1/users/{user['_id']}", json={"active": False}, headers=admin).status_code == 200
    assert_unauthorized(client.post("/api/v1/tasks", json={"title": "after deactivation"}, headers=fresh))
    assert get_db().tasks.count_documents({"owner": user["_id"]}) == 0


def test_a_read_only_redis_is_503_not_500(make_app, log_dir):
    keep_out_of_the_checkout = ["--dir", str(log_dir), "--repl-diskless-sync", "yes"]
    primary = RedisServer(log_dir, extra=keep_out_of_the_checkout).start()
    replica = RedisServer(log_dir, extra=["--replicaof", "127.0.0.1", str(primary.port), *keep_out_of_the_checkout]).start()
    try:
        client = make_app(REDIS_URL=replica.url).test_client()
        register(client, "ro@example.com")
        response = client.post("/api/v1/auth/login", json={"email": "ro@example.com", "password": PASSWORD})
        assert "read-only" in assert_problem(response, 503)["detail"]
    finally:
        replica.stop()
        primary.stop()


def test_a_lost_generation_mirror_is_restored_from_mongodb(app, client, user_tokens):
    """Logout-all is stored in MongoDB too: a Redis that lost the key does not bring old tokens back."""
    old = user_tokens["access_token"]
    assert client.post("/api/v1/auth/logout-all", headers=bearer(old)).status_code == 204
    user = get_db().users.find_one({"email": "ada@example.com"})
    assert user["token_gen"] == 1
    with app.app_context():
        from taskapi.extensions import get_redis

        get_redis().delete(f"taskapi:ugen:{user['_id']}")  # e.g. a Redis restored from an older file
    assert_unauthorized(client.get(ME, headers=bearer(old)))
    assert client.get(ME, headers=bearer(login(client, "ada@example.com")["access_token"])).status_code == 200


def test_refresh_reads_the_account_again(client, user_tokens):
    get_db().users.delete_one({"email": "ada@example.com"})  # an operator's erasure, by hand
    body = assert_unauthorized(client.post("/api/v1/auth/refresh", headers=bearer(user_tokens["refresh_token"])))
    assert "account" in body["detail"]


def test_users_delete_revokes_first_then_erases(app, client, user_tokens, runner):
    headers = bearer(user_tokens["access_token"])
    for i in range(3):
        client.post("/api/v1/tasks", json={"title": f"t{i}"}, headers=headers, environ_base={})
    client.post("/api/v1/tasks", json={"title": "keyed"}, headers={**headers, "Idempotency-Key": "k1"})
    client.get("/api/v1/tasks", headers=headers)  # a cached page
    user_id = get_db().users.find_one({"email": "ada@example.com"})["_id"]
    result = runner.invoke(args=["users", "delete", "--email", "ada@example.com", "--yes"])
    assert result.exit_code == 0, result.output
    assert "deleted ada@example.com" in result.output and "4 tasks" in result.output
    for response in (client.get("/api/v1/tasks", headers=headers), client.post("/api/v1/tasks", json={"title": "x"},
                                                                               headers=headers),
                     client.post("/api/v1/auth/refresh", headers=bearer(user_tokens["refresh_token"]))):
        assert_unauthorized(response)
    assert get_db().users.find_one({"_id": user_id}) is None
    assert get_db().tasks.count_documents({"owner": user_id}) == 0
    with app.app_context():
        from taskapi.extensions import get_redis

        assert not list(get_redis().scan_iter(f"taskapi:idem*{user_id}*"))
        assert not app.extensions["cache_redis"].exists(f"taskapi:cache:{user_id}")
    again = runner.invoke(args=["users", "delete", "--email", "ada@example.com", "--yes"])
    assert again.exit_code == 1 and "no user" in again.output


def test_users_delete_refuses_the_last_admin(runner, admin_tokens):
    result = runner.invoke(args=["users", "delete", "--email", "root@example.com", "--yes"])
    assert result.exit_code == 1 and "last active admin" in result.output
    assert get_db().users.find_one({"email": "root@example.com"}) is not None


def test_two_admins_demoting_each_other_at_once_leave_one_admin(app, client, admin_tokens, runner):
    outcomes = []
    for round_ in range(10):
        emails = [f"a{round_}@example.com", f"b{round_}@example.com"]
        for email in emails:
            assert runner.invoke(args=["users", "create-admin", "--email", email, "--password", PASSWORD]).exit_code == 0
        get_db().users.update_many({"email": "root@example.com"}, {"$set": {"role": "user"}})  # only these two
        tokens = [bearer(login(client, email, environ_base={"REMOTE_ADDR": f"10.7.{round_}.{i}"})["access_token"])
                  for i, email in enumerate(emails)]
        ids = [str(get_db().users.find_one({"email": email})["_id"]) for email in emails]
        results: dict[int, int] = {}
        barrier = threading.Barrier(2)

        def demote(me: int, barrier=barrier, results=results, ids=ids, tokens=tokens) -> None:
            other = app.test_client()
            barrier.wait()
            results[me] = other.patch(f"/api/v1/users/{ids[1 - me]}", json={"role": "user"},
                                      headers=tokens[me]).status_code

        threads = [threading.Thread(target=demote, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        outcomes.append(sorted(results.values()))
        assert get_db().users.count_documents({"role": "admin", "active": True}) == 1, results
        get_db().users.delete_many({"email": {"$in": emails}})
    assert all(200 in pair and pair != [200, 200] for pair in outcomes), outcomes


def test_the_last_admin_cannot_be_deactivated_by_another_path(client, admin_tokens, runner):
    """Deactivating the only other admin is fine; the one remaining cannot be removed."""
    register(client, "x@example.com")
    assert runner.invoke(args=["users", "create-admin", "--email", "x@example.com", "--password", PASSWORD]).exit_code == 0
    other = bearer(login(client, "x@example.com")["access_token"])
    root_id = str(get_db().users.find_one({"email": "root@example.com"})["_id"])
    x_id = str(get_db().users.find_one({"email": "x@example.com"})["_id"])
    assert client.patch(f"/api/v1/users/{root_id}", json={"active": False}, headers=other).status_code == 200
    assert_problem(client.patch(f"/api/v1/users/{x_id}", json={"active": False}, headers=other), 409)  # self
    assert get_db().users.count_documents({"role": "admin", "active": True}) == 1


def test_audience_and_issuer_keep_deployments_apart(make_app, app):
    """Two deployments sharing a secret and a Redis do not accept each other's tokens."""
    east = make_app(JWT_AUDIENCE="east").test_client()
    register(east, "aud@example.com")
    token = bearer(login(east, "aud@example.com")["access_token"])
    assert east.get(ME, headers=token).status_code == 200
    assert_unauthorized(make_app(JWT_AUDIENCE="west").test_client().get(ME, headers=token))
    assert_unauthorized(make_app(JWT_AUDIENCE="east", JWT_ISSUER="other").test_client().get(ME, headers=token))


def test_an_old_token_spends_only_its_senders_budget(make_app):
    client = make_app(RATELIMIT_DEFAULT="5/minute").test_client()
    register(client, "victim@example.com")
    old = login(client, "victim@example.com")
    assert client.post("/api/v1/auth/logout", headers=bearer(old["access_token"])).status_code == 204
    for _ in range(8):
        client.get("/api/v1/tasks", headers=bearer(old["access_token"]), environ_base={"REMOTE_ADDR": "10.0.0.66"})
    fresh = login(client, "victim@example.com")
    assert client.get("/api/v1/tasks", headers=bearer(fresh["access_token"])).status_code == 200


def test_an_evicting_revocation_redis_is_reported_at_start(log_dir, servers):
    from taskapi.extensions import redis_eviction_warning

    lru = RedisServer(log_dir, maxmemory="8mb", policy="allkeys-lru").start()
    try:
        assert "allkeys-lru" in redis_eviction_warning(lru.url, servers["CACHE_REDIS_URL"])
        assert redis_eviction_warning(servers["REDIS_URL"], servers["CACHE_REDIS_URL"]) is None
        assert "same Redis" in redis_eviction_warning(servers["REDIS_URL"], servers["REDIS_URL"])
    finally:
        lru.stop()
