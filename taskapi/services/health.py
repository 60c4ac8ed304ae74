"""Readiness checks: ping each dependency with a short timeout and name what is down."""

from __future__ import annotations

import logging
from collections.abc import Callable

from taskapi.errors import DEPENDENCY_ERRORS
from taskapi.extensions import get_db, get_redis

log = logging.getLogger("taskapi.health")


def _ping_mongodb() -> None:
    get_db().command("ping")


def _ping_redis() -> None:
    get_redis().ping()


PINGS: dict[str, Callable[[], None]] = {"mongodb": _ping_mongodb, "redis": _ping_redis}


def unreachable(*names: str) -> list[str]:
    """Which of these dependencies ("mongodb", "redis") do not answer a ping."""
    down = []
    for name in names:
        try:
            PINGS[name]()
        except DEPENDENCY_ERRORS as exc:
            log.warning("readiness: %s unavailable (%s)", name, exc.__class__.__name__)
            down.append(name)
    return down


def readiness() -> dict[str, str]:
    """Map each dependency to "ok" or "unavailable"."""
    down = unreachable(*PINGS)
    return {name: "unavailable" if name in down else "ok" for name in PINGS}
