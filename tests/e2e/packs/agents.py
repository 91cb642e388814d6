"""The agent-sessions pack (schemas/agent_sessions) as its tests use it: where it is, and
the users and sessions most rows hang from."""

from __future__ import annotations

import uuid
from typing import Any

from tests.declared import Client
from tests.e2e.packs.support import PACKS, create

PACK = PACKS / "agent_sessions"
PACKAGE = "agent_sessions.v1"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def user(c: Client, **fields: Any) -> Any:
    name = unique("u")
    fields.setdefault("email", f"{name}@example.com")
    fields.setdefault("username", name)
    return await create(c, "User", **fields)


async def session(c: Client, user_id: str | None = None, **fields: Any) -> Any:
    return await create(c, "Session", user_id=user_id or (await user(c)).id, **fields)


async def tool_call(c: Client, session_id: str, tool: str = "Read", **fields: Any) -> Any:
    fields.setdefault("tool_use_id", unique("toolu"))
    return await create(c, "ToolCall", session_id=session_id, tool_name=tool, **fields)


async def task(c: Client, user_id: str, **fields: Any) -> Any:
    return await create(c, "Task", user_id=user_id, name="t", prompt_template="p", **fields)
