"""What the standard methods (server/resources.py) are given and answer: a resource's
declaration, the server-wide policy, a List request's fields and a page of results."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Protocol

from google.protobuf.message import Message
from sqlalchemy import ColumnElement

from repositories.base import Repository
from server import validation
from server.expansion import Relation
from server.mapping import M, MessageMapping


class ListRequest(Protocol):
    """The fields every List request message has."""

    page_size: int
    page_token: str
    filter: str
    order_by: str
    skip: int
    show_deleted: bool
    count_mode: Any  # the generated CountMode enum


@dataclass(frozen=True)
class Resource(Generic[M]):
    """Everything the standard methods need to know about one resource."""

    name: str  # the request field holding the resource: "user"
    repository: type[Repository]
    mapping: MessageMapping[M]
    checks: Mapping[str, validation.Check]
    # Fields a create must populate.
    required: frozenset[str]
    # Values a create gets for writable fields the client left unset.
    create_defaults: Mapping[str, Any]
    # Rules declared in the schema (schema/rules.py): run on the message with the
    # fields written (None: a create writes all) and the request's name for it.
    rules: Callable[[Message, Collection[str] | None, str], None] | None = None
    # Related fields a Get, List or BatchGet may `expand` (server/expansion.py).
    related: tuple[Relation, ...] = ()


@dataclass(frozen=True)
class Policy:
    """Server-wide knobs from settings."""

    # Soft-deleted rows get purge_time = delete_time + retention; None keeps them.
    retention: timedelta | None = None
    request_id_ttl: timedelta = timedelta(hours=24)
    # ESTIMATED counts stay exact while the planner expects fewer rows.
    estimate_threshold: int = 10_000
    # The largest response the server sends (REPOGATE_MAX_MESSAGE_BYTES).
    max_message_bytes: int = 4 * 1024 * 1024
    # Seconds an Aggregate or Rank call's database work may take; None: no bound of its own.
    aggregate_timeout: float | None = 10.0
    # How many groups, in order, an Aggregate call's pages may reach.
    aggregate_max_groups: int = 10_000


@dataclass(frozen=True)
class Page(Generic[M]):
    items: list[M]
    next_page_token: str
    total_size: int | None = None
    total_size_exact: bool = False


# A condition a domain search adds to a List, and the text that names it in page tokens.
Narrowing = tuple[ColumnElement[bool], str]
