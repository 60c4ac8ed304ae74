"""Leases: a document with a fixed _id that one process holds at a time, for a bounded time.

Inserting the document takes the lease; a lease older than its time is broken by the next
taker, so a crashed holder never blocks the others for long. Used where a check and the
write it guards must not interleave with another's (migrations, the last-admin rule).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from taskapi.errors import ServiceUnavailable

LEASES = "_leases"


class LeaseBusy(ServiceUnavailable):
    """Someone else held the lease for as long as we were willing to wait."""


@contextmanager
def lease(collection: Collection[dict[str, Any]], name: str, *, hold: timedelta, wait_seconds: float,
          busy: str = "Another change of this kind is in progress; retry shortly.") -> Iterator[None]:
    """Hold the lease `name` in `collection` for the block (at most `hold`, then it may be broken)."""
    holder = uuid.uuid4().hex
    deadline = time.monotonic() + wait_seconds
    while True:
        now = datetime.now(UTC)
        try:
            collection.insert_one({"_id": name, "holder": holder, "taken_at": now, "expires_at": now + hold})
            break
        except DuplicateKeyError:
            collection.delete_one({"_id": name, "expires_at": {"$lt": now}})
        if time.monotonic() > deadline:
            raise LeaseBusy(busy)
        time.sleep(0.05)
    try:
        yield
    finally:
        collection.delete_one({"_id": name, "holder": holder})
