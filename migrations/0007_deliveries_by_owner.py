"""Deliveries ready for sharding: the one-row-per-attempt unique index starts with the owner, so
that the shard key {owner: 1, event: 1} is its prefix and MongoDB can enforce it across shards.
The new index is built first (the old one guarantees it holds), then the old one goes."""

from pymongo import ASCENDING


def upgrade(db):
    db.deliveries.create_index([("owner", ASCENDING), ("event", ASCENDING), ("webhook", ASCENDING),
                                ("attempt", ASCENDING)], name="deliveries_owner_attempt", unique=True)
    if "deliveries_attempt" in db.deliveries.index_information():
        db.deliveries.drop_index("deliveries_attempt")
