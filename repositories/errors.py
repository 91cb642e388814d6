"""Domain errors, and the one place where database exceptions become them.

The server maps each class here to a gRPC status (server/errors.py); nothing
below that line knows about gRPC, and nothing above it sees a driver error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc

from repositories import driver_faults as faults

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldViolation:
    """One request field at fault, as in google.rpc.BadRequest."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a client may see. `reason` is UPPER_SNAKE_CASE."""

    reason = "UNKNOWN"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: list[FieldViolation] | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata)
        self.violations = violations or []
        if reason:
            self.reason = reason

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        return cls(
            f"invalid {field}: {description}", [FieldViolation(field, description)], reason=reason
        )


class NotFound(DomainError):
    reason = "RESOURCE_NOT_FOUND"

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(
            f"{resource_type} {resource_id!r} not found",
            metadata={"resource_type": resource_type, "id": resource_id},
        )


class AlreadyExists(DomainError):
    reason = "RESOURCE_ALREADY_EXISTS"

    def __init__(self, resource_type: str, field: str | None) -> None:
        what = f"with this {field} " if field else ""
        super().__init__(
            f"a {resource_type} {what}already exists",
            metadata={"resource_type": resource_type, "field": field or ""},
        )
        self.field = field


class EtagMismatch(DomainError):
    """The resource changed since the client read it (AIP-154)."""

    reason = "ETAG_MISMATCH"

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(
            f"{resource_type} {resource_id!r} was changed by another request; "
            "read it again and retry with the new etag",
            metadata={"resource_type": resource_type, "id": resource_id},
        )


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"


class ResourceDeleted(FailedPrecondition):
    """The resource is soft-deleted: undelete it before changing it (AIP-164)."""

    reason = "RESOURCE_DELETED"

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(
            f"{resource_type} {resource_id!r} is deleted; undelete it first, "
            "or delete it with force to purge it",
            metadata={"resource_type": resource_type, "id": resource_id},
        )


class NotDeleted(AlreadyExists):
    """Undelete of a resource that is live (AIP-164)."""

    reason = "RESOURCE_NOT_DELETED"

    def __init__(self, resource_type: str, resource_id: str) -> None:
        DomainError.__init__(
            self,
            f"{resource_type} {resource_id!r} is not deleted",
            metadata={"resource_type": resource_type, "id": resource_id},
        )
        self.field = None


class InvalidTransition(FailedPrecondition):
    """A status change the resource's lifecycle does not allow from its current status."""

    reason = "INVALID_STATUS_TRANSITION"

    def __init__(
        self,
        resource_type: str,
        resource_id: str,
        current: str,
        target: str,
        *,
        action: str | None = None,
    ) -> None:
        what = f"{resource_type} {resource_id!r}"
        super().__init__(
            f"{what} is {current}; {action} needs it {target}"
            if action
            else f"{what} cannot go from {current} to {target}",
            metadata={
                "resource_type": resource_type,
                "id": resource_id,
                "from": current,
                "to": target,
            },
        )


class UserNotLive(FailedPrecondition):
    """A session must belong to a live (not soft-deleted) user of its tenant."""

    reason = "USER_NOT_LIVE"

    def __init__(self, user_id: str) -> None:
        super().__init__(
            f"user {user_id!r} does not exist or is deleted; sessions need a live user",
            metadata={"resource_type": "user", "id": user_id},
        )


class UserHasSessions(FailedPrecondition):
    """A user is purged only once it has no live sessions."""

    reason = "USER_HAS_SESSIONS"

    def __init__(self, user_id: str, count: int) -> None:
        super().__init__(
            f"user {user_id!r} has {count} live session(s); delete them before purging it",
            metadata={"resource_type": "user", "id": user_id, "sessions": str(count)},
        )


class NoMessage(NotFound):
    """A session has no (live) message of the type asked for."""

    def __init__(self, session_id: str, message_type: str) -> None:
        what = f"{message_type!r} messages" if message_type else "messages"
        DomainError.__init__(
            self,
            f"session {session_id!r} has no {what}",
            metadata={
                "resource_type": "message",
                "session_id": session_id,
                "message_type": message_type,
            },
        )


class Conflict(DomainError):
    """A concurrent transaction won; retrying the whole call may succeed."""

    reason = "CONCURRENCY_CONFLICT"


class SerializationFailure(Conflict):
    """The database gave up on the transaction (serialization failure, deadlock,
    SQLite busy): its work is lost, and only the whole transaction can be retried."""


class TransactionNotFound(NotFound):
    """Unknown, expired, finished, another tenant's, or an id that does not verify: one
    answer, so transaction ids cannot be probed."""

    reason = "TRANSACTION_NOT_FOUND"

    def __init__(self, transaction_id: str, why: str = "", **metadata: str) -> None:
        # A retried Commit that finds its transaction committed has nothing to redo.
        advice = "" if metadata.get("state") == "COMMITTED" else "; begin a new one and retry"
        DomainError.__init__(
            self,
            f"transaction {transaction_id!r} not found{': ' + why if why else ''}{advice}",
            metadata={"resource_type": "transaction", "id": transaction_id, **metadata},
        )


class TransactionAborted(Conflict):
    """The transaction ended on a conflict or a lost connection (AIP-194: retry all of it)."""

    reason = "TRANSACTION_ABORTED"

    def __init__(self, transaction_id: str, why: str) -> None:
        DomainError.__init__(
            self,
            f"transaction {transaction_id!r} was aborted ({why}) and rolled back; "
            "begin a new transaction and retry the whole of it",
            metadata={"id": transaction_id},
        )


class ReadOnlyTransaction(FailedPrecondition):
    reason = "TRANSACTION_READ_ONLY"

    def __init__(self, transaction_id: str = "") -> None:
        super().__init__(
            "the transaction is read-only; writes need a read-write transaction",
            metadata={"id": transaction_id},
        )


class ResourceExhausted(DomainError):
    """A server limit was reached; retry later."""

    reason = "RESOURCE_EXHAUSTED"


class TooManyTransactions(ResourceExhausted):
    reason = "TOO_MANY_TRANSACTIONS"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"{limit} transactions are open, the most this server allows; "
            "commit or roll back one, or retry later",
            metadata={"limit": str(limit)},
        )


class Overloaded(Exception):
    """Marks an error raised before the call reached the database: the server turned it
    away (its tenant's share of the pool was taken, or the whole pool was). It says
    nothing of the database's health, so no circuit breaker counts it."""


class DeadlineExceeded(DomainError):
    """The work outlasted the time it was given; it was cancelled and undone."""

    reason = "STATEMENT_TIMEOUT"


class Unauthenticated(DomainError):
    """The call carries no credential, or one that does not verify."""

    reason = "CREDENTIALS_INVALID"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason:
            self.reason = reason


class PermissionDenied(DomainError):
    """The credential verified, but does not allow this call."""

    reason = "PERMISSION_DENIED"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, metadata=metadata)
        if reason:
            self.reason = reason


class Unavailable(DomainError):
    """A dependency (the database) cannot be reached right now."""

    reason = "DATABASE_UNAVAILABLE"


class PoolExhausted(Unavailable, Overloaded):
    """No pooled connection became free in time: the server is busy, the database may
    be fine."""


@dataclass(frozen=True)
class ErrorContext:
    """What the translator needs to name things: the resource and its unique fields."""

    resource_type: str
    # Constraint or index name -> the request field it guards.
    unique_fields: Mapping[str, str]
    # Unique indexes that only a race can violate (a per-parent sequence number taken
    # twice under snapshot isolation): their violation is a conflict to retry.
    racing: frozenset[str] = frozenset()


@contextlib.contextmanager
def translate_db_errors(ctx: ErrorContext | None = None) -> Iterator[None]:
    """Turns driver and SQLAlchemy exceptions into domain errors.

    Raw database messages are logged here and never passed on: they may hold
    SQL text or another tenant's values.
    """
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise _integrity_error(exc, ctx) from exc
    except sa_exc.DBAPIError as exc:
        if faults.is_conflict(exc):
            raise SerializationFailure(
                "the request conflicted with a concurrent one; retry it"
            ) from exc
        if faults.sqlstate(exc) == faults.READ_ONLY_SQLSTATE:
            raise ReadOnlyTransaction() from exc
        if not (faults.is_pooler_statement(exc) or faults.is_unavailable(exc)):
            raise
        log.warning("database unavailable: %s", exc.orig)
        raise Unavailable("the database is unavailable; retry later") from exc
    except sa_exc.TimeoutError as exc:
        # The pool's checkout timeout: every connection stayed in use.
        log.warning("database pool exhausted: %s", exc)
        raise PoolExhausted("no database connection became free in time; retry later") from exc
    except (OSError, TimeoutError) as exc:
        # Connection refused, or connecting timed out: raised before any statement runs.
        log.warning("database unavailable: %r", exc)
        raise Unavailable("the database is unavailable; retry later") from exc
    except Exception as exc:
        if not faults.is_driver_fault(exc):
            raise
        log.warning("database driver failed: %r", exc)
        raise Unavailable("the database is unavailable; retry later") from exc


def _integrity_error(exc: sa_exc.IntegrityError, ctx: ErrorContext | None) -> DomainError:
    resource_type = ctx.resource_type if ctx else "resource"
    text = faults.constraint_name(exc)
    sqlstate = faults.sqlstate(exc)
    if sqlstate == "23505" or "UNIQUE constraint failed" in text:
        if ctx is not None and any(name in text for name in ctx.racing):
            return SerializationFailure("the request conflicted with a concurrent one; retry it")
        field = None
        for name, candidate in ctx.unique_fields.items() if ctx else ():
            if name in text:
                field = candidate
                break
        return AlreadyExists(resource_type, field)
    if sqlstate == "23503" or "FOREIGN KEY constraint failed" in text:
        return FailedPrecondition(
            f"the {resource_type} refers to, or is referred to by, "
            "another resource that prevents this change"
        )
    log.error("unexpected integrity error: %s", exc.orig)
    return FailedPrecondition(f"the {resource_type} violates a data constraint")
