"""Demo data: users with a realistic spread of tasks, written with bulk inserts."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.collection import Collection

from taskapi.extensions import mongodb_engine
from taskapi.models import create_declared_indexes, declared_indexes
from taskapi.models.task import DONE, Task, derived_fields, indexes_for, tasks
from taskapi.models.user import new_user, users
from taskapi.services import cache, tokens
from taskapi.services.auth import insert_user
from taskapi.services.tasks import reserve_slots, set_task_count

BATCH = 1000
WORDS = ("review", "write", "call", "plan", "fix", "buy", "book", "send", "update", "clean", "prepare", "check")
THINGS = ("report", "invoice", "dentist", "groceries", "slides", "release notes", "garden", "budget", "flight",
          "newsletter", "backup", "car service", "tax return", "birthday gift")
TAGS = ("work", "home", "errands", "health", "finance", "family", "urgent-ish", "q4", "reading", "ops")


def ensure_user(*, email: str, password_hash: str) -> tuple[str, bool]:
    """The id of the user with this email, created (role user) if needed; (id, created)."""
    existing = users().find_one({"email": email}, {"_id": 1})
    if existing is not None:
        return str(existing["_id"]), False
    user = new_user(email=email, name=email.split("@")[0].title(), password_hash=password_hash)
    insert_user(user)  # with its announcement: the members copy of the monolith
    return str(user["_id"]), True


def task_documents(owner: str, count: int, *, now: datetime, rng: random.Random) -> Iterator[dict[str, Any]]:
    """Tasks created over the last 120 days: ~45% done, ~15% in progress; most have a due date."""
    owner_id = ObjectId(owner)
    for _ in range(count):
        created = now - timedelta(seconds=rng.randint(0, 120 * 86400))
        status = rng.choices(("todo", "in_progress", "done"), weights=(40, 15, 45))[0]
        priority = rng.choices(("low", "medium", "high", "urgent"), weights=(25, 45, 22, 8))[0]
        due = None if rng.random() < 0.25 else created + timedelta(hours=rng.randint(-48, 60 * 24))
        completed = min(now, created + timedelta(hours=rng.randint(1, 24 * 20))) if status == "done" else None
        created = created.replace(microsecond=created.microsecond // 1000 * 1000)
        writable = {
            "title": f"{rng.choice(WORDS).capitalize()} {rng.choice(THINGS)}",
            "description": "" if rng.random() < 0.6 else "Seeded demo task.",
            "status": status, "priority": priority, "due_at": due,
            "tags": rng.sample(TAGS, rng.choice((0, 1, 1, 2, 3))),
            "remind_at": None,  # seeded tasks never send reminders
        }
        # completed_at is made up too: derived_fields keeps a "previous" one for a done task.
        values = derived_fields(writable, previous_status=DONE, previous_completed=completed, now=now)
        yield {"_id": ObjectId(), "owner": owner_id, **values, "created_at": created,
               "updated_at": max(created, completed or created), "version": 1}


def seed(*, users: int, tasks_per_user: int, password: str, email_pattern: str = "demo{n}@example.com",
         seed_value: int = 42, progress: Callable[[int], None] = lambda n: None,
         stage: Callable[[str], None] = lambda name: None) -> dict[str, int]:
    """Create (or reuse) `users` users and add `tasks_per_user` tasks to each.

    Into an empty collection, the tasks are loaded first and indexed after (on the embedded
    server that is several times faster than keeping eleven indexes up to date per insert); an
    interrupted load leaves indexes for `db upgrade` to rebuild. The demo users share one
    password, so its argon2 hash is computed once.
    """
    rng = random.Random(seed_value)
    now = datetime.now(UTC)
    collection = tasks()
    bulk_load = tasks_per_user > 0 and collection.find_one({}, {"_id": 1}) is None
    password_hash = tokens.hash_password(password)
    if bulk_load:
        present = collection.index_information()
        for spec in declared_indexes(Task):
            if spec["name"] in present:
                collection.drop_index(spec["name"])
    created_users = inserted = 0
    try:
        for n in range(1, users + 1):
            owner, created = ensure_user(email=email_pattern.format(n=n), password_hash=password_hash)
            created_users += created
            if not bulk_load:
                reserve_slots(owner, tasks_per_user, enforce=False)  # counts what the user has first
            batch: list[dict[str, Any]] = []
            for doc in task_documents(owner, tasks_per_user, now=now, rng=rng):
                batch.append(doc)
                if len(batch) == BATCH:
                    inserted += _insert(collection, batch, progress)
                    batch = []
            if batch:
                inserted += _insert(collection, batch, progress)
            if bulk_load:  # the collection was empty: this user has exactly these
                set_task_count(owner, tasks_per_user)
            cache.bump(owner)  # cached pages of this user no longer tell the truth
    finally:
        if bulk_load:
            stage("indexing")
            create_declared_indexes(collection, Task, only={spec["name"] for spec in indexes_for(mongodb_engine())})
    return {"users_created": created_users, "tasks_inserted": inserted}


def _insert(collection: Collection[dict[str, Any]], batch: list[dict[str, Any]], progress: Callable[[int], None]) -> int:
    collection.insert_many(batch, ordered=False)
    progress(len(batch))
    return len(batch)
