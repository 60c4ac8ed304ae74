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
