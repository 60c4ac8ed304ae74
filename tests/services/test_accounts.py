"""Accounts and user administration called directly: registration, authentication, revocation
before the change is stored, the last-admin rule."""

from __future__ import annotations

import pytest
from pymongo.errors import DuplicateKeyError

from taskapi.errors import Conflict, Unauthorized
from taskapi.extensions import get_redis
from taskapi.models.user import users
from taskapi.services import auth, tokens
from taskapi.services import users as admin


def test_register_keeps_the_declared_defaults_and_refuses_a_second_account(app):
    with app.app_context():
        user = auth.register(email="ada@example.com", password="correct horse battery", name="Ada")
        stored = users().find_one({"_id": user["_id"]})
        assert (stored["role"], stored["active"], stored["token_gen"]) == ("user", True, 0)
        assert stored["password_hash"].startswith("$argon2id$")
        with pytest.raises(Conflict):
            auth.register(email="ada@example.com", password="another password 1")


def test_only_a_taken_address_is_a_conflict(app):
    """Another unique key colliding (here the id) is a bug to surface, never "email taken"."""
    with app.app_context():
        user = auth.register(email="grace@example.com", password="correct horse battery")
        twin = {**user, "email": "someone.else@example.com"}
        with pytest.raises(DuplicateKeyError) as raised:
            auth.insert_user(twin)
        assert not isinstance(raised.value, Conflict) and not auth.email_taken(raised.value)
        assert users().count_documents({"email": "someone.else@example.com"}) == 0


def test_authenticate_answers_one_401_for_unknown_email_wrong_password_and_deactivation(app):
    with app.app_context():
        user = auth.register(email="bob@example.com", password="correct horse battery")
        found, generation = auth.authenticate(email="bob@example.com", password="correct horse battery")
        assert found["_id"] == user["_id"] and generation == 0
        details = set()
        for email, password in (("nobody@example.com", "correct horse battery"), ("bob@example.com", "wrong one!")):
            with pytest.raises(Unauthorized) as failure:
                auth.authenticate(email=email, password=password)
            details.add(failure.value.detail)
        users().update_one({"_id": user["_id"]}, {"$set": {"active": False}})
        with pytest.raises(Unauthorized) as failure:
            auth.authenticate(email="bob@example.com", password="correct horse battery")
        details.add(failure.value.detail)
        assert details == {auth.BAD_CREDENTIALS}


def test_revoke_and_update_raises_the_mirror_and_the_durable_generation_together(app):
    with app.app_context():
        user = auth.register(email="cy@example.com", password="correct horse battery")
        generation = auth.revoke_and_update(user["_id"], 0, name="Cy")
        assert generation == 1
        assert int(get_redis().get(f"taskapi:ugen:{user['_id']}")) == 1
        stored = users().find_one({"_id": user["_id"]})
        assert (stored["token_gen"], stored["name"]) == (1, "Cy")
        # A lost mirror is restored from the durable copy, never read as "no revocation".
        get_redis().delete(f"taskapi:ugen:{user['_id']}")
        assert tokens.restore_generation(str(user["_id"])) == 1


def test_the_last_active_admin_can_be_neither_demoted_nor_deleted(app):
    with app.app_context():
        first, created = admin.create_admin(email="root@example.com", password="correct horse battery")
        assert created and first["role"] == "admin"
        second, _ = admin.create_admin(email="ops@example.com", password="correct horse battery")
        demoted = admin.update_user(actor_id=str(second["_id"]), user_id=str(first["_id"]), role="user")
        assert demoted["role"] == "user" and demoted["token_gen"] == 1  # the role change revoked tokens
        with pytest.raises(Conflict, match="last active admin"):
            admin.delete_user(user_id=str(second["_id"]))
        promoted, created = admin.create_admin(email="root@example.com", password="ignored password")
        assert not created and promoted["role"] == "admin"
