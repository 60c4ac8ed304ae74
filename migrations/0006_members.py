"""Account facts between the services: the auth service's outbox (`account_events`) and the
tasks service's copy of each account (`members`: reminder addresses, active, token generation).

A database that holds users (the monolith's, or a split deployment that still shares one) gets
a member for every user, so reminders, the global stats and a lost Redis mirror read the tasks
side's own copy from now on. A tasks service with a database of its own has no users here: its
members arrive as the auth service announces them."""

from datetime import UTC, datetime

from pymongo import ASCENDING, UpdateOne


def upgrade(db):
    db.account_events.create_index([("due_at", ASCENDING)], sparse=True, name="account_events_due_at")
    db.account_events.create_index([("relayed_at", ASCENDING)], expireAfterSeconds=30 * 86400,
                                   name="account_events_retention")  # never removes a row not yet relayed
    db.members.create_index([("gone", ASCENDING)], sparse=True, name="members_gone")
    now = datetime.now(UTC)
    batch = []
    for user in db.users.find({}, {"email": 1, "active": 1, "token_gen": 1, "facts_version": 1}):
        batch.append(UpdateOne({"_id": user["_id"]},
                               {"$setOnInsert": {"email": user["email"], "active": user["active"],
                                                 "token_gen": user.get("token_gen", 0),
                                                 "version": user.get("facts_version", 0), "updated_at": now}},
                               upsert=True))
        if len(batch) == 1000:
            db.members.bulk_write(batch, ordered=False)
            batch = []
    if batch:
        db.members.bulk_write(batch, ordered=False)
