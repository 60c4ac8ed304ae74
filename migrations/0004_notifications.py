"""Notifications: reminders on tasks, the events outbox, webhooks, their delivery log, mail.

Tasks gain remind_at / reminded_at / remind_due (null on existing tasks) and an index on
remind_due, the worker's query for reminders that are due. Events, deliveries and mail that
wait for the worker carry `due_at` (sparse index); a TTL index keeps 30 days of each.
Pending deliveries carry `sweep_at` instead (when the sweep looks at them next).
Written out rather than read from the models, so this step does the same whenever it runs.
"""

from pymongo import ASCENDING

RETENTION_SECONDS = 30 * 86400


def upgrade(db):
    db.tasks.update_many({"remind_at": {"$exists": False}},
                         {"$set": {"remind_at": None, "reminded_at": None, "remind_due": None}})
    db.tasks.create_index([("remind_due", ASCENDING)], name="tasks_remind_due")
    db.events.create_index([("due_at", ASCENDING)], name="events_due_at", sparse=True)
    db.events.create_index([("created_at", ASCENDING)], name="events_retention", expireAfterSeconds=RETENTION_SECONDS)
    db.webhooks.create_index([("owner", ASCENDING), ("_id", ASCENDING)], name="webhooks_owner")
    db.deliveries.create_index([("owner", ASCENDING), ("webhook", ASCENDING), ("_id", ASCENDING)],
                               name="deliveries_log")
    db.deliveries.create_index([("event", ASCENDING), ("webhook", ASCENDING), ("attempt", ASCENDING)],
                               name="deliveries_attempt", unique=True)
    db.deliveries.create_index([("sweep_at", ASCENDING)], name="deliveries_sweep_at", sparse=True)
    db.deliveries.create_index([("created_at", ASCENDING)], name="deliveries_retention",
                               expireAfterSeconds=RETENTION_SECONDS)
    db.mails.create_index([("due_at", ASCENDING)], name="mails_due_at", sparse=True)
    db.mails.create_index([("created_at", ASCENDING)], name="mails_retention", expireAfterSeconds=RETENTION_SECONDS)
