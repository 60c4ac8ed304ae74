"""The one clock: now in UTC at MongoDB's millisecond precision, and how the API writes a time."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, at MongoDB's millisecond precision, so what we return is what we stored."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def aware(value: datetime) -> datetime:
    """A stored time as UTC-aware (a client without tz_aware reads naive UTC datetimes)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix; milliseconds (MongoDB's precision) only when non-zero."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
