"""Every document's declared indexes are the ones the migrations create (tasks have their own
test: on the embedded server migration 0003 keeps a subset)."""

from __future__ import annotations

from taskapi.cli import migrate
from taskapi.extensions import get_db
from taskapi.models.event import Event
from taskapi.models.mail import Mail
from taskapi.models.member import Member
from taskapi.models.user import AccountEvent, User
from taskapi.models.webhook import Delivery, Webhook


def test_the_migrations_create_exactly_the_declared_indexes(app):
    with app.app_context():
        scratch = get_db().client["taskapi_model_index_check"]
        try:
            migrate.upgrade(scratch)
            for document in (User, AccountEvent, Member, Event, Webhook, Delivery, Mail):
                collection = document._meta["collection"]
                existing = {spec["name"]: spec for spec in scratch[collection].list_indexes() if spec["name"] != "_id_"}
                declared = {spec["name"]: spec for spec in document._meta["index_specs"]}
                assert set(existing) == set(declared), collection
                for name, spec in declared.items():
                    found = existing[name]
                    assert [(k, int(d)) for k, d in found["key"].items()] == spec["fields"], (collection, name)
                    assert found.get("unique", False) == spec.get("unique", False), (collection, name)
                    assert found.get("sparse", False) == spec.get("sparse", False), (collection, name)
                    assert found.get("expireAfterSeconds") == spec.get("expireAfterSeconds"), (collection, name)
        finally:
            get_db().client.drop_database("taskapi_model_index_check")
