"""Numbered migrations: `migrations/NNNN_name.py` files with `upgrade(db)`, applied once each, in order.

Applied names are recorded in the `_migrations` collection. A lease (services/locks.py) keeps
two instances that start together (a scaled deployment) from applying the same step twice.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

from pymongo.database import Database

from config import ROOT
from taskapi.models import create_declared_indexes, server_engine
from taskapi.models.event import Event
from taskapi.models.mail import Mail
from taskapi.models.task import Task, indexes_for
from taskapi.models.user import User
from taskapi.models.webhook import Delivery, Webhook
from taskapi.services.locks import LeaseBusy, lease

MIGRATIONS_DIR = ROOT / "migrations"
RECORDS = "_migrations"
LOCKS = "_migrations_lock"
LOCK_STALE_AFTER = timedelta(minutes=10)
NAME_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.py$")


@dataclass(frozen=True)
class Migration:
    name: str
    path: Path

    def load(self) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"taskapi_migration_{self.name}", self.path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "upgrade", None)):
            raise RuntimeError(f"migration {self.name} has no upgrade(db) function")
        return module


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every NNNN_name.py in the directory, by number; duplicate numbers are a mistake."""
    found = sorted((p for p in directory.glob("*.py") if NAME_RE.match(p.name)), key=lambda p: p.name)
    numbers = [p.name[:4] for p in found]  # NAME_RE: four digits first
    duplicates = {n for n in numbers if numbers.count(n) > 1}
    if duplicates:
        raise RuntimeError(f"two migrations share the number(s) {', '.join(sorted(duplicates))}")
    return [Migration(p.stem, p) for p in found]


def status(db: Database, directory: Path = MIGRATIONS_DIR) -> list[tuple[str, datetime | None]]:
    """Each known migration with the time it was applied, or None when pending."""
    applied = {doc["_id"]: doc["applied_at"] for doc in db[RECORDS].find()}
    return [(m.name, applied.get(m.name)) for m in discover(directory)]


def upgrade(db: Database, directory: Path = MIGRATIONS_DIR, *, wait_seconds: float = 60) -> list[str]:
    """Apply pending migrations in order, then create any declared index that is missing (an
    interrupted bulk seed drops the task indexes while it loads); returns what was done."""
    migrations = discover(directory)
    try:
        with lease(db[LOCKS], "upgrade", hold=LOCK_STALE_AFTER, wait_seconds=wait_seconds):
            applied = _apply_pending(db, migrations)
            if directory == MIGRATIONS_DIR:  # the app's own migrations declare these collections
                applied += [f"index {name}" for name in ensure_declared_indexes(db)]
            return applied
    except LeaseBusy:
        raise RuntimeError("another `db upgrade` holds the migration lock; try again shortly") from None


def ensure_declared_indexes(db: Database) -> list[str]:
    """Create the declared indexes that fit this server and are missing; returns their names."""
    task_names = {spec["name"] for spec in indexes_for(server_engine(db.client))}
    return (create_declared_indexes(db.users, User)
            + create_declared_indexes(db.tasks, Task, only=task_names)
            + create_declared_indexes(db.events, Event)
            + create_declared_indexes(db.webhooks, Webhook)
            + create_declared_indexes(db.deliveries, Delivery)
            + create_declared_indexes(db.mails, Mail))


def _apply_pending(db: Database, migrations: list[Migration]) -> list[str]:
    done = {doc["_id"] for doc in db[RECORDS].find({}, {"_id": 1})}
    applied = []
    for migration in migrations:
        if migration.name in done:
            continue
        migration.load().upgrade(db)
        db[RECORDS].insert_one({"_id": migration.name, "applied_at": datetime.now(UTC)})
        applied.append(migration.name)
    return applied
