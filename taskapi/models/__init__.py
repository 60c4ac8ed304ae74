"""MongoEngine documents. Indexes are declared in meta and created by migrations, never lazily."""

from __future__ import annotations

from typing import Any

from mongoengine import Document
from pymongo import MongoClient
from pymongo.collection import Collection


def server_engine(client: MongoClient[dict[str, Any]]) -> str:
    """"secantus" for the embedded SecantusDB (its buildInfo says `secantusVersion`), else "mongodb"."""
    return "secantus" if "secantusVersion" in client.admin.command("buildInfo") else "mongodb"


def declared_indexes(document: type[Document]) -> list[dict[str, Any]]:
    """A document's declared indexes as create_index arguments: {"keys": [...], "name": ..., ...}."""
    return [{"keys": spec["fields"], **{k: v for k, v in spec.items() if k != "fields"}}
            for spec in document._meta.get("index_specs", [])]


def create_declared_indexes(collection: Collection[dict[str, Any]], document: type[Document], *,
                            only: set[str] | None = None) -> list[str]:
    """Create the declared indexes (those named in `only`, if given) that the collection lacks;
    never drops one. Returns the names created."""
    existing = {spec["name"] for spec in collection.list_indexes()}
    created = []
    for spec in declared_indexes(document):
        if spec["name"] not in existing and (only is None or spec["name"] in only):
            collection.create_index(spec["keys"], **{k: v for k, v in spec.items() if k != "keys"})
            created.append(spec["name"])
    return created


# Shard keys for a sharded cluster (`flask --app wsgi db shard`), per owning service. The owner
# first, hashed: a user's documents sit together (every query of the task, webhook and delivery
# routes has an owner equality, so each goes to one shard; tests/http/test_targeted_queries.py),
# users spread evenly over the shards, and new users (increasing ids) do not all land on the
# last shard. `_id` after it lets one very large owner's documents still split into chunks.
# `deliveries` is ranged on {owner, event}: its unique index (one row per attempt) starts with that
# key, which MongoDB needs to enforce it across shards, and a hashed key can have no unique index.
# The price: new owners (growing ids) start on the last chunk until the balancer moves them.
# Left unsharded: the small or short-lived collections (`users`, `account_events`, `mails`,
# leases), which stay on the primary shard.
SHARD_KEYS: dict[str, dict[str, dict[str, Any]]] = {
    "tasks": {"tasks": {"owner": "hashed", "_id": 1}, "webhooks": {"owner": "hashed", "_id": 1},
              "events": {"owner": "hashed", "_id": 1}, "deliveries": {"owner": 1, "event": 1},
              "members": {"_id": "hashed"}},
    "auth": {},
}
