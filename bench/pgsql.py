"""The users table as the bench writes it directly: COPY for seeding, and the bare
asyncpg statements the baselines run. Columns follow repositories/tables.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from repogate.v1 import user_pb2

COLUMNS = (
    "tenant_id",
    "id",
    "version",
    "create_time",
    "update_time",
    "created_by",
    "email",
    "username",
    "display_name",
    "is_active",
)
INSERT = (
    f"INSERT INTO users ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))})"
)
SELECT_BY_ID = (
    "SELECT id, email, username, display_name, is_active, version, create_time, "
    "update_time, created_by FROM users WHERE tenant_id = $1 AND id = $2"
)
# The statement Repogate runs for the bench's ListUsers first page (filter
# "is_active = true", order_by "create_time desc", page_size 50), as
# AdminService.GetQueryProfile reports it: every column, the tenant, the filter, live
# rows only, the order with the id as tie-break, and one row more than the page.
LIST_PAGE = (
    "SELECT users.tenant_id, users.id, users.version, users.create_time, users.update_time, "
    "users.delete_time, users.purge_time, users.created_by, users.updated_by, users.email, "
    "users.username, users.display_name, users.is_active, users.last_login_time FROM users "
    "WHERE users.tenant_id = $1::VARCHAR AND users.is_active = $2::BOOLEAN "
    "AND users.delete_time IS NULL ORDER BY users.create_time DESC, users.id ASC "
    "LIMIT $3::INTEGER"
)
ACTOR = "bench-seed"


def record(tenant: str, name: str, created: datetime, *, active: bool = True) -> tuple[Any, ...]:
    """One users row, in COLUMNS order."""
    return (
        tenant,
        uuid.uuid4(),
        1,
        created,
        created,
        ACTOR,
        f"{name}@{tenant}.bench.example",
        name,
        f"Bench User {name}",
        active,
    )


def seed_records(tenant: str, count: int, start: datetime) -> list[tuple[Any, ...]]:
    """`count` users of `tenant`, one millisecond apart from `start`; one in 20 inactive."""
    return [
        record(tenant, f"u{i:07d}", start + timedelta(milliseconds=i), active=i % 20 != 0)
        for i in range(count)
    ]


def now() -> datetime:
    return datetime.now(UTC)


def to_user(row: Any) -> user_pb2.User:
    """A users row as the User message, the mapping a bare server would do."""
    user = user_pb2.User(
        id=str(row["id"]),
        email=row["email"],
        username=row["username"],
        display_name=row["display_name"],
        is_active=row["is_active"],
        etag=str(row["version"]),
        created_by=row["created_by"] or "",
    )
    user.create_time.CopyFrom(_timestamp(row["create_time"]))
    user.update_time.CopyFrom(_timestamp(row["update_time"]))
    return user


def page_token(secret: bytes, row: Any) -> str:
    """A signed keyset position after `row`, as a bare server would hand out: its create
    time and id as JSON, base64url, and an HMAC-SHA256 of that cut to 16 bytes."""
    position = json.dumps([row["create_time"].isoformat(), str(row["id"])]).encode()
    signature = hmac.new(secret, position, hashlib.sha256).digest()[:16]
    return f"{_b64(position)}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
