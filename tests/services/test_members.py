"""Account facts between the services (services/members.py): the monolith keeps the tasks side's
copy of each account in the change's own transaction; the auth service announces changes through
its outbox instead, and what the tasks worker applies (`members.receive`) brings the copy, and the
erasure of a deleted account's data, to the tasks side. Real MongoDB and Redis."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId

from taskapi import worker
from taskapi.extensions import get_redis
from taskapi.models.member import members
from taskapi.models.task import tasks
from taskapi.models.user import account_events, users
from taskapi.services import auth, stats, tokens
from taskapi.services import members as tasks_side
from taskapi.services import users as admin
from tests.helpers import bearer, login, register


def member(user_id) -> dict | None:
    """The member as the tasks side keeps it, without its version and time."""
    return members().find_one({"_id": ObjectId(str(user_id))}, {"_id": 0, "updated_at": 0, "version": 0})


def version_of(user_id) -> int:
    return members().find_one({"_id": ObjectId(str(user_id))})["version"]


def test_the_monolith_keeps_each_account_change_in_the_members_copy(app):
    with app.app_context():
        root, _ = admin.create_admin(email="root@example.com", password="correct horse battery")
        ada = auth.register(email="ada@example.com", password="correct horse battery")
        assert member(ada["_id"]) == {"email": "ada@example.com", "active": True, "token_gen": 0}
        admin.update_user(actor_id=str(root["_id"]), user_id=str(ada["_id"]), active=False)
        assert member(ada["_id"]) == {"email": "ada@example.com", "active": False, "token_gen": 1}
        # Re-activation raises the generation too: a later state always has a higher one.
        admin.update_user(actor_id=str(root["_id"]), user_id=str(ada["_id"]), active=True)
        assert member(ada["_id"]) == {"email": "ada@example.com", "active": True, "token_gen": 2}
        auth.logout_all(user_id=str(ada["_id"]))
        assert member(ada["_id"])["token_gen"] == 3
        assert account_events().count_documents({}) == 0  # nothing to relay: one database


def test_an_older_or_repeated_announcement_changes_nothing_and_a_tombstone_is_final(app):
    with app.app_context():
        ident = str(ObjectId())
        state = {"id": ident, "email": "late@example.com", "active": True, "token_gen": 3, "gone": False}
        assert tasks_side.apply({**state, "version": 5})
        # Older (a deactivation relayed late) and repeated (a second copy): both change nothing,
        # even with the same token generation (a logout-all racing a deactivation).
        assert not tasks_side.apply({**state, "active": False, "version": 4})
        assert not tasks_side.apply({**state, "active": False, "version": 5})
        assert member(ident) == {"email": "late@example.com", "active": True, "token_gen": 3}
        assert tasks_side.durable_generation(ident) == 3
        assert tasks_side.apply({**state, "active": False, "version": 6})
        assert member(ident)["active"] is False
        tasks_side.apply({"id": ident, "email": "", "active": False, "token_gen": 0, "gone": True, "version": 0})
        assert not tasks_side.apply({**state, "version": 9})  # nothing brings a deleted account back
        assert member(ident)["gone"] is True and tasks_side.durable_generation(ident) is None
        assert tasks_side.durable_generation("not-an-id") is None


def test_concurrent_changes_of_one_account_get_distinct_versions_in_order(app):
    """Every announcing transaction raises the account's version; the copy ends at the last one."""
    import threading

    with app.app_context():
        root, _ = admin.create_admin(email="root@example.com", password="correct horse battery")
        ada = auth.register(email="ada@example.com", password="correct horse battery")
    errors = []

    def change(kind: str) -> None:
        try:
            with app.app_context():
                for _ in range(5):
                    if kind == "logout":
                        auth.logout_all(user_id=str(ada["_id"]))
                    else:
                        for active in (False, True):
                            admin.update_user(actor_id=str(root["_id"]), user_id=str(ada["_id"]), active=active)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=change, args=(kind,)) for kind in ("logout", "activation")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with app.app_context():
        stored = users().find_one({"_id": ada["_id"]})
        assert stored["facts_version"] == 1 + 5 + 10  # registration, 5 logouts, 10 (de)activations
        assert version_of(ada["_id"]) == stored["facts_version"]
        assert member(ada["_id"]) == {"email": "ada@example.com", "active": stored["active"],
                                      "token_gen": stored["token_gen"]}


def test_global_stats_count_the_accounts_the_tasks_side_knows(app):
    with app.app_context():
        admin.create_admin(email="root@example.com", password="correct horse battery")
        ada = auth.register(email="ada@example.com", password="correct horse battery")
        auth.register(email="bob@example.com", password="correct horse battery")
        assert stats.dashboard(owner=None, now=datetime.now(UTC))["users"] == 3 == users().count_documents({})
        admin.delete_user(user_id=str(ada["_id"]))
        assert stats.dashboard(owner=None, now=datetime.now(UTC))["users"] == 2


def test_the_auth_service_announces_through_its_outbox_and_the_tasks_worker_applies_it(make_app):
    auth_app = make_app(TASKAPI_SERVICE="auth")
    client = auth_app.test_client()
    created = register(client, "ada@example.com")
    ada = created["id"]
    with auth_app.app_context():
        (row,) = auth.account_events_to_relay(10)
        assert row["facts"] == {"id": ada, "email": "ada@example.com", "active": True, "token_gen": 0, "gone": False,
                                "version": 1}
        assert member(ada) is None  # the auth service never writes the tasks side's copy
        auth.account_events_relayed([row["_id"]])
        assert auth.account_events_to_relay(10) == []
        assert worker.consumed_queues(auth_app) == [f"{auth_app.config['BROKER_QUEUE_PREFIX']}.auth-mail"]
        tasks_side.receive(row["facts"])  # what the tasks worker does with the `account` message
        assert member(ada) == {"email": "ada@example.com", "active": True, "token_gen": 0}
        tasks().insert_one({"_id": ObjectId(), "owner": ObjectId(ada), "title": "kept until the announcement"})
        assert admin.delete_user(user_id=ada) is None  # nothing of the tasks side erased here
        assert tasks().count_documents({"owner": ObjectId(ada)}) == 1
        waiting = auth.account_events_to_relay(10)
        assert [row["facts"]["gone"] for row in waiting] == [False, True]  # revoked (inactive), then deleted
        gone = waiting[1]
        assert tasks_side.receive(gone["facts"])["tasks"] == 1
        assert tasks().count_documents({"owner": ObjectId(ada)}) == 0 and member(ada)["active"] is False


def test_an_announcement_raises_a_lagging_generation_mirror(app):
    with app.app_context():
        ident = str(ObjectId())
        get_redis().set(tokens.key_generation(ident), 2)  # rebuilt from a copy that lagged
        tasks_side.receive({"id": ident, "email": "a@example.com", "active": True, "token_gen": 5, "gone": False,
                            "version": 3})
        assert int(get_redis().get(tokens.key_generation(ident))) == 5
        tasks_side.receive({"id": ident, "email": "a@example.com", "active": True, "token_gen": 4, "gone": False,
                            "version": 2})  # an older one never lowers it
        assert int(get_redis().get(tokens.key_generation(ident))) == 5


def test_announce_repairs_a_members_copy_that_drifted(app, runner):
    """A monolith upgraded while replicas of the old version still ran: `users announce`."""
    with app.app_context():
        ada = auth.register(email="ada@example.com", password="correct horse battery")
        bob = auth.register(email="bob@example.com", password="correct horse battery")
        members().delete_one({"_id": ada["_id"]})  # registered by an old replica
        users().update_one({"_id": bob["_id"]}, {"$set": {"active": False}})  # deactivated by one
    result = runner.invoke(args=["users", "announce"])
    assert result.exit_code == 0 and "announced 2 accounts" in result.output, result.output
    with app.app_context():
        assert member(ada["_id"]) == {"email": "ada@example.com", "active": True, "token_gen": 0}
        assert member(bob["_id"])["active"] is False


def test_two_services_sharing_a_database_send_only_their_own_mail(make_app, app):
    """On the way to the split both workers read one `mails` collection: the tasks side never
    takes a password-reset row (it would send it without its token)."""
    from taskapi.models.mail import PASSWORD_RESET, REMINDER, mails, new_mail
    from taskapi.services import mailbox

    tasks_app = make_app(TASKAPI_SERVICE="tasks")
    with tasks_app.app_context():
        reset = new_mail(to="a@example.com", subject="Reset", text="(written when sent)", kind=PASSWORD_RESET,
                         now=datetime.now(UTC))
        reminder = new_mail(to="a@example.com", subject="Reminder", text="Due", kind=REMINDER, now=datetime.now(UTC))
        mails().insert_many([reset, reminder])
        kinds = worker.mail_kinds(tasks_app)
        assert mailbox.mails_to_publish(kinds=kinds) == [reminder["_id"]]
        assert mailbox.send_mail(reset["_id"], worker.letters(tasks_app), kinds) is None  # not its to claim
        assert mails().find_one({"_id": reset["_id"]})["attempts"] == 0
    auth_app = make_app(TASKAPI_SERVICE="auth")
    with auth_app.app_context():
        assert mailbox.mails_to_publish(kinds=worker.mail_kinds(auth_app)) == [reset["_id"]]


def test_a_lost_generation_mirror_at_the_tasks_service_is_rebuilt_from_members(make_app, client):
    register(client, "ada@example.com")
    pair = login(client, "ada@example.com")
    assert client.post("/api/v1/auth/logout-all", headers=bearer(pair["access_token"])).status_code == 204
    fresh = login(client, "ada@example.com")
    tasks_app = make_app(TASKAPI_SERVICE="tasks")  # HS256 here: the same secret verifies
    with tasks_app.app_context():
        ada = users().find_one({"email": "ada@example.com"})["_id"]
        users().update_one({"_id": ada}, {"$set": {"token_gen": 0}})  # proves members is what is read
        get_redis().delete(tokens.key_generation(str(ada)))
    service = tasks_app.test_client()
    assert service.get("/api/v1/tasks", headers=bearer(pair["access_token"])).status_code == 401
    assert service.get("/api/v1/tasks", headers=bearer(fresh["access_token"])).status_code == 200


def test_declared_member_and_account_event_indexes_exist_after_migrations(app):
    from taskapi.extensions import get_db
    from taskapi.models.member import Member
    from taskapi.models.user import AccountEvent

    with app.app_context():
        for document, collection in ((Member, "members"), (AccountEvent, "account_events")):
            existing = {spec["name"]: spec for spec in get_db()[collection].list_indexes()}
            for declared in document._meta["indexes"]:
                found = existing[declared["name"]]
                assert list(found["key"].keys()) == declared["fields"]
                assert found.get("sparse", False) == declared.get("sparse", False)
                assert found.get("expireAfterSeconds") == declared.get("expireAfterSeconds")


def test_the_migration_gives_every_existing_user_a_member(app):
    import importlib.util

    from taskapi.cli import migrate
    from taskapi.extensions import get_db

    spec = importlib.util.spec_from_file_location("m0006", migrate.MIGRATIONS_DIR / "0006_members.py")
    step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step)
    with app.app_context():
        ada = auth.register(email="ada@example.com", password="correct horse battery")
        members().delete_many({})  # as before this version: users without members
        users().update_one({"_id": ada["_id"]}, {"$set": {"token_gen": 4, "active": False}})
        step.upgrade(get_db())
        assert member(ada["_id"]) == {"email": "ada@example.com", "active": False, "token_gen": 4}
        assert version_of(ada["_id"]) == 1  # the user's facts_version: later announcements are newer
        step.upgrade(get_db())  # twice is harmless
        assert members().count_documents({}) == 1
