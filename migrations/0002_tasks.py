"""Tasks: one index per list query shape (owner [+ status | + tags], sort key, _id).

Written out here rather than read from the model, so this step creates the same indexes
whenever it runs; tests check the model's declared indexes match what exists.
"""

from pymongo import ASCENDING

SORT_KEYS = ["created_at", "updated_at", "priority_rank", "due_key_asc", "due_key_desc"]


def upgrade(db):
    for key in SORT_KEYS:
        db.tasks.create_index([("owner", ASCENDING), (key, ASCENDING), ("_id", ASCENDING)],
                              name=f"tasks_{key}")
        db.tasks.create_index([("owner", ASCENDING), ("status", ASCENDING), (key, ASCENDING), ("_id", ASCENDING)],
                              name=f"tasks_status_{key}")
    db.tasks.create_index([("owner", ASCENDING), ("tags", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)],
                          name="tasks_tags_created_at")
