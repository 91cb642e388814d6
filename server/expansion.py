"""`expand` on Get, List and BatchGet: a resource with its related resources (its children,
or its parent) in one call. docs/schema.md, "Related resources", is the manual.

The related rows are read in the call's unit of work, through the tenant's repositories,
with one statement per expanded field whatever the number of rows: the children of every
row of the page at once (repositories/related.py), or every row's parent at once. Only
live rows are shown, and they come without their own related fields.

Costs are bounded: at most `limit` children per parent, and at most MAX_CHILDREN per
expanded field per call. A List page holds fewer rows when that needs it (page_size is a
maximum; next_page_token goes on); a BatchGet asking for more is INVALID_ARGUMENT.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from repositories import related
from repositories.base import Repository, Row
from repositories.database import RepositorySource
from repositories.errors import InvalidArgument
from repositories.ordering import Order

M = TypeVar("M", bound=Message)

# The most children one call reads for one expanded field.
MAX_CHILDREN = 10_000
REASON = "INVALID_EXPAND"


@dataclass(frozen=True)
class Relation:
    """One related field of a resource, bound to the related resource's repository."""

    name: str  # the field: "tasks"
    children: bool  # a repeated field of children; else the parent
    # The reference column: the child's (children), or this resource's (parent).
    via: str
    repository: type[Repository]  # the related resource's
    to_message: Callable[[Row], Message]  # the related resource's mapping
    # Children only: how many per parent, in what order, and the flag set when cut.
    limit: int = 0
    order: Order = ()
    truncated: str = ""


class Expander(Generic[M]):
    """Reads and sets the related fields a request names, for one resource."""

    def __init__(
        self, resource: str, relations: Iterable[Relation], to_message: Callable[[Row], M]
    ) -> None:
        self._resource = resource
        self._relations = {r.name: r for r in relations}
        self._to_message = to_message

    def names(self, request: Any) -> tuple[str, ...]:
        """The related fields `request.expand` names, once each; () for a request without
        the field. INVALID_ARGUMENT naming `expand` for a name that is none."""
        names: list[str] = []
        for name in getattr(request, "expand", ()):
            if name not in self._relations:
                known = ", ".join(sorted(self._relations)) or "none"
                raise InvalidArgument.field(
                    "expand",
                    f"{name[:64]!r} is not a related field of {self._resource} "
                    f"(related fields: {known})",
                    reason=REASON,
                )
            if name not in names:
                names.append(name)
        return tuple(names)

    def page_size(self, size: int, names: Sequence[str]) -> int:
        """How many rows a page expanding `names` holds at most, for a page_size of `size`."""
        for name in names:
            relation = self._relations[name]
            if relation.children:
                size = min(size, max(1, MAX_CHILDREN // relation.limit))
        return size

    def check_batch(self, count: int, names: Sequence[str]) -> None:
        """INVALID_ARGUMENT naming `ids` when `count` rows expanding `names` could read more
        than MAX_CHILDREN children for one field."""
        most = self.page_size(count, names)
        if most < count:
            raise InvalidArgument.field(
                "ids",
                f"holds {count} ids; expanding {', '.join(names)} allows at most {most} "
                f"per call ({MAX_CHILDREN} children per field)",
                reason=REASON,
            )

    async def messages(
        self, uow: RepositorySource, rows: Sequence[Row], names: Sequence[str]
    ) -> list[M]:
        """`rows` as messages, with the related fields `names` filled: one statement each."""
        found = [self._to_message(row) for row in rows]
        for name in names:
            relation = self._relations[name]
            repo = uow.repository(relation.repository)
            if relation.children:
                await _children(repo, relation, rows, found)
            else:
                await _parents(repo, relation, rows, found)
        return found


async def _children(
    repo: Repository, r: Relation, rows: Sequence[Row], messages: Sequence[Message]
) -> None:
    # One more than the limit: its presence says the list was cut.
    read = await related.first_children(
        repo, r.via, {row["id"] for row in rows}, r.order, r.limit + 1
    )
    by_parent: dict[uuid.UUID, list[Row]] = defaultdict(list)
    for child in read:
        by_parent[child[r.via]].append(child)
    for row, message in zip(rows, messages, strict=True):
        children = by_parent.get(row["id"], [])
        getattr(message, r.name).extend(r.to_message(child) for child in children[: r.limit])
        if r.truncated and len(children) > r.limit:
            setattr(message, r.truncated, True)


async def _parents(
    repo: Repository, r: Relation, rows: Sequence[Row], messages: Sequence[Message]
) -> None:
    wanted = {row[r.via] for row in rows if row[r.via] is not None}
    parents = {parent["id"]: parent for parent in await related.live_rows(repo, wanted)}
    for row, message in zip(rows, messages, strict=True):
        parent = parents.get(row[r.via])
        if parent is not None:
            getattr(message, r.name).CopyFrom(r.to_message(parent))
