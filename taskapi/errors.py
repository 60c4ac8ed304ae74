"""The errors a service raises, each with its HTTP status (taskapi/http/problems.py renders them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pymongo.errors
import redis.exceptions


class ApiError(Exception):
    """An error a service raises; the handler turns it into problem+json."""

    status = 500
    detail = "The server could not complete the request."

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.detail)
        self.detail = detail or self.detail
        self.errors = dict(errors) if errors else None
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status = 400
    detail = "The request is malformed."


class Unauthorized(ApiError):
    status = 401
    detail = "A valid access token is required."

    def __init__(self, detail: str | None = None, *, error: str | None = "invalid_token", **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        # RFC 6750 section 3: no error code when no credentials were sent; otherwise name the
        # problem without echoing the token.
        description = self.detail.replace('"', "'")
        challenge = ('Bearer realm="taskapi"' if error is None
                     else f'Bearer realm="taskapi", error="{error}", error_description="{description}"')
        self.headers.setdefault("WWW-Authenticate", challenge)


class Forbidden(ApiError):
    status = 403
    detail = "You are not allowed to do this."


class NotFound(ApiError):
    status = 404
    detail = "The requested resource was not found."


class Conflict(ApiError):
    status = 409
    detail = "The request conflicts with the current state of the resource."


class PreconditionFailed(ApiError):
    status = 412
    detail = "The resource has changed since you read it (If-Match does not match)."


class UnsupportedMediaType(ApiError):
    status = 415
    detail = "The request body must be application/json."


class ValidationFailed(ApiError):
    status = 422
    detail = "The request failed validation."


class ServiceUnavailable(ApiError):
    """503 with `Retry-After`: DEPENDENCY_RETRY_AFTER_SECONDS unless the raiser knows better."""

    status = 503
    detail = "A dependency is unavailable; retry shortly."


# Every Redis failure (down, timeout, out of memory, read-only replica) and MongoDB's
# connection and timeout failures answer 503; other MongoDB errors are bugs (500).
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    pymongo.errors.ConnectionFailure,  # includes ServerSelectionTimeoutError, AutoReconnect, NetworkTimeout
    pymongo.errors.ExecutionTimeout,  # maxTimeMS, sent by the request's time budget
    pymongo.errors.WTimeoutError,
    redis.exceptions.RedisError,
)
