"""Readiness checks: ping each dependency with a short timeout and name what is down."""

from __future__ import annotations

import logging

from taskapi.errors import DEPENDENCY_ERRORS
from taskapi.extensions import get_db, get_redis

log = logging.getLogger("taskapi.health")


def readiness() -> dict[str, str]:
    """Map each dependency to "ok" or "unavailable"."""
    checks = {}
    for name, ping in (("mongodb", lambda: get_db().command("ping")), ("redis", lambda: get_redis().ping())):
        try:
            ping()
        except DEPENDENCY_ERRORS as exc:
            log.warning("readiness: %s unavailable (%s)", name, exc.__class__.__name__)
            checks[name] = "unavailable"
        else:
            checks[name] = "ok"
    return checks
