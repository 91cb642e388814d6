"""AIP-160 filters through a real server, checked against a plain-Python reading.

Hypothesis writes filters over a tenant of seeded users (metacharacters in the
values, mixed case, inactive, soft-deleted, created and deleted by actors) and
sends each through ListUsers (every page) and CountUsers. The ids must be the
ones a Python evaluation of the same filter picks from the users as the server
returned them when it wrote them. Filters the generator marks invalid must be
INVALID_ARGUMENT / INVALID_FILTER with a BadRequest on `filter`, never INTERNAL.

Nullable columns (created_by and updated_by when no actor was named, which the
API shows as "", and delete_time) follow SQL's three-valued logic, as the server
does: a comparison with a missing value is unknown, NOT unknown is unknown, and
only `= null` / `!= null` test for absence. Text is ASCII only (SQLite's lower()
folds ASCII alone), and `<` `<=` `>` `>=` are used on timestamps only, since
string order depends on the database's collation.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cached_property
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repogate.v1 import user_pb2
from tests.e2e.support import Stub, fails
from tests.rpc import details, md

pytestmark = pytest.mark.e2e

Row = dict[str, Any]
KEEP = "keep"  # in SEEDS: not deleted

# username, email, display_name, is_active, created by, deleted by (KEEP: live; None: no actor).
# Values with metacharacters come with a neighbour that an unescaped pattern would also match
# ("bob_jones" / "bobXjones", "[abc]" / "b", "back\\slash" / "backslash", "svc_%[x]*" / "svc_%x").
SEEDS: list[tuple[str, str, str, bool, str | None, str | None]] = [
    ("ann", "ann@example.com", "Ann Smith", True, None, KEEP),
    ("anna", "Anna.Smith@Example.COM", "ANNA", True, "alice", KEEP),
    ("bob_jones", "bob_jones@example.com", "Bob", False, None, KEEP),
    ("bobXjones", "bobXjones@example.com", "50% off", True, "svc_%[x]*", KEEP),
    ("sure", "100%sure@example.com", "50 pct off", True, "Bob", None),
    ("sure2", "100Xsure@example.com", "Under_score", True, "svc_%x", KEEP),
    ("slash", "back\\slash@example.com", "UnderXscore", False, None, "alice"),
    ("backslash", "backslash@example.com", "O'Brien", True, "svcA1[x]z", KEEP),
    ("star", "star*man@example.com", "Back\\slash [a]", True, "ALICE", KEEP),
    ("starman", "starXman@example.com", "Backslash a", True, None, KEEP),
    ("quiz", "q?[x]@example.com", "", True, None, KEEP),
    ("quiz2", "qZx@example.com", "q?[x]*", False, "alice", KEEP),
    ("carl.son", "carl*son@example.com", 'say "hi"', True, "alice", "svc_%[x]*"),
    ("dee", "it's@example.com", "qZx", False, "alice", KEEP),
    ("eve", "eve@EXAMPLE.com", "star*man", True, None, KEEP),
    ("Frank", "frank+1@example.com", "starman", True, "a b", KEEP),
    ("gus", "gus@example.org", "[abc]", True, None, None),
    ("hal9000", "hal@example.com", "b", False, "Bob", KEEP),
    ("ivy", "ivy@example.com", "  padded  ", True, "svc_%[x]*", KEEP),
    ("jo", "jo@example.com", "MiXeD CaSe", True, None, "Bob"),
    ("kim", "kim@example.com", "percent%%", True, "alice", KEEP),
    ("lee", "lee@example.com", "under__score", True, None, KEEP),
    ("max", "max@example.com", "x\\*y", False, "ALICE", KEEP),
    ("ned", "ned@example.com", "ann smith", True, None, KEEP),
]
STRINGS = ("email", "username", "display_name", "created_by", "updated_by")
TIMES = ("create_time", "update_time", "delete_time")
FIELDS = (*STRINGS, *TIMES, "is_active", "id")
# Fragments that select other rows if a LIKE or GLOB metacharacter slips through.
TRICKY = ["%", "_", "\\", "\\s", "*", "?", "[", "]", "[a]", "[x]", "[abc]", "q?[", "bob_"]
TRICKY += ["100%", "svc_%"]


def md_as(tenant: str, actor: str | None) -> tuple[tuple[str, str], ...]:
    return md(tenant) if actor is None else md(tenant, x_actor_id=actor)


def stamp(message: user_pb2.User, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    value = getattr(message, name)
    assert value.nanos % 1000 == 0, "the databases keep microseconds"
    when: datetime = value.ToDatetime(tzinfo=UTC)
    return when


def truth(message: user_pb2.User) -> Row:
    """A user as the Python side reads filters over it; "" actors are NULL in the database."""
    return {
        "message": message,
        "id": uuid.UUID(message.id),
        "email": message.email,
        "username": message.username,
        "display_name": message.display_name,
        "is_active": message.is_active,
        "created_by": message.created_by or None,
        "updated_by": message.updated_by or None,
        **{name: stamp(message, name) for name in TIMES},
    }


class Seeded:
    """The seeded users and the strategies over them, built once: hypothesis checks a
    strategy by printing it, arguments and all, and rows print slowly."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows

    def __repr__(self) -> str:
        return f"<{len(self.rows)} seeded users>"

    @cached_property
    def filters(self) -> st.SearchStrategy[Expr]:
        return filters(self)

    @cached_property
    def invalid_filters(self) -> st.SearchStrategy[tuple[str, str]]:
        return invalid_filters(self)


_seeded: dict[str, Seeded] = {}


async def seeded(users: Stub, tenant: str) -> Seeded:
    """The tenant's users, written once per test (hypothesis runs the body many times)."""
    if tenant not in _seeded:
        made: list[user_pb2.User] = []
        for username, email, display_name, is_active, creator, _ in SEEDS:
            user = user_pb2.User(
                username=username, email=email, display_name=display_name, is_active=is_active
            )
            request = user_pb2.CreateUserRequest(user=user)
            made.append(await users.CreateUser(request, metadata=md_as(tenant, creator)))
        for i, (*_, deleter) in enumerate(SEEDS):
            if deleter != KEEP:
                delete = user_pb2.DeleteUserRequest(id=made[i].id)
                made[i] = await users.DeleteUser(delete, metadata=md_as(tenant, deleter))
                assert made[i].HasField("delete_time")
        # A neighbour with the same values: none of its users may ever be listed.
        for username, email, *_ in SEEDS[:4]:
            user = user_pb2.User(username=username, email=email)
            await users.CreateUser(user_pb2.CreateUserRequest(user=user), metadata=md(tenant + "n"))
        _seeded[tenant] = Seeded([truth(user) for user in made])
    return _seeded[tenant]


# ------------------------------------------------------------ filters as data

Value = bool | None  # SQL's true, false and unknown


def all3(values: Iterable[Value]) -> Value:
    seen = list(values)
    return False if False in seen else None if None in seen else True


def any3(values: Iterable[Value]) -> Value:
    seen = list(values)
    return True if True in seen else None if None in seen else False


def not3(value: Value) -> Value:
    return None if value is None else not value


def on(field: str, test: Callable[[Any], bool]) -> Callable[[Row], Value]:
    """A comparison on `field`: unknown when the row has no value there."""
    return lambda r: None if r[field] is None else test(r[field])


@dataclass(frozen=True)
class Expr:
    """A generated filter: its text, its value on a row, and where it may stand unparenthesised.

    level: 0 `a AND b`, 1 `a b`, 2 `a OR b`, 3 `NOT a`, 4 a restriction or a group.
    depth: nesting of groups and negations, which the server caps at 16.
    parts: the restrictions a compound filter is made of; none for a restriction.
    """

    text: str
    value: Callable[[Row], Value]
    level: int = 4
    depth: int = 0
    parts: tuple[Expr, ...] = ()


def restrictions(*nodes: Expr) -> tuple[Expr, ...]:
    return tuple(part for node in nodes for part in (node.parts or (node,)))


def quoted(segments: list[str], quote: str, spare: bool) -> str:
    """A string literal whose unescaped `*`s are exactly the joins between segments.

    `spare` also escapes the quote character that needs no escaping.
    """
    other = "'" if quote == '"' else '"'

    def escape(text: str) -> str:
        text = text.replace("\\", "\\\\").replace("*", "\\*").replace(quote, "\\" + quote)
        return text.replace(other, "\\" + other) if spare else text

    return quote + "*".join(escape(s) for s in segments) + quote


def glob(segments: list[str]) -> re.Pattern[str]:
    """What `segments` joined by `*` wildcards match, whole."""
    return re.compile(".*".join(re.escape(s) for s in segments), re.DOTALL)


# How a string restriction is cut from a value; patterns and `=~` are drawn more often.
SHAPES: tuple[str, ...] = (
    "exact",
    "prefix",
    "prefix",
    "suffix",
    "suffix",
    "contains",
    "contains",
    "inner",
    "any",
)
SHAPES += ("has", "has", "fold", "fold", "in")

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@st.composite
def string_leaf(draw: st.DrawFn, seeds: Seeded) -> Expr:
    field = draw(st.sampled_from(STRINGS))
    present = sorted({r[field] for r in seeds.rows if r[field] is not None})
    # Values with GLOB's metacharacters (SQLite) and LIKE's (PostgreSQL) are drawn more often.
    glob_meta = [v for v in present if any(c in v for c in "*?[")] or present
    like_meta = [v for v in present if any(c in v for c in "%_\\")] or present
    source = draw(
        st.sampled_from(present)
        | st.sampled_from(glob_meta)
        | st.sampled_from(like_meta)
        | st.sampled_from(TRICKY)
        | st.text("aAbB%_\\'\"*?[] ", max_size=4)
    )
    i = draw(st.integers(0, len(source)))
    j = draw(st.integers(i, len(source)))
    shape = draw(st.sampled_from(SHAPES))
    segments = {
        "exact": [source],
        "prefix": [source[:i], ""],
        "suffix": ["", source[i:]],
        "contains": ["", source[i:j], ""],
        "inner": [source[:i], source[j:]],
        "any": ["", ""],
        "has": [source[i:j]],
        "fold": draw(
            st.sampled_from([[source.swapcase()], [source[:i].swapcase(), source[j:].upper()]])
        ),
        "in": [source],
    }[shape]
    quote, spare = draw(st.sampled_from(['"', "'"])), draw(st.booleans())

    def literal(parts: list[str]) -> str:
        return quoted(parts, quote, spare)

    if shape == "has":
        part = segments[0]
        return Expr(f"{field} : {literal(segments)}", on(field, lambda v: part in v))
    if shape == "fold":
        rx = glob([s.lower() for s in segments])
        return Expr(
            f"{field} =~ {literal(segments)}", on(field, lambda v: bool(rx.fullmatch(v.lower())))
        )
    if shape == "in":
        values = [source, *draw(st.lists(st.sampled_from(present), max_size=3))]
        text = f"{field} IN ({', '.join(literal([v]) for v in values)})"
        return Expr(text, on(field, lambda v: v in values))
    op = draw(st.sampled_from(["=", "!="]))
    rx = glob(segments)
    return Expr(
        f"{field} {op} {literal(segments)}",
        on(field, lambda v: bool(rx.fullmatch(v)) == (op == "=")),
    )


def rfc3339(draw: st.DrawFn, when: datetime) -> str:
    """`when` as RFC 3339 text: any offset, Z or z, T or t, and 0 to 9 fraction digits."""
    minutes = draw(st.sampled_from([0, 0, 60, -300, 330, 840, -720]))
    local = when.astimezone(timezone(timedelta(minutes=minutes)))
    micros = f"{local.microsecond:06d}"
    fraction = draw(st.sampled_from(["." + micros, "." + micros + "000", "shortest"]))
    if fraction == "shortest":
        fraction = "." + micros.rstrip("0") if local.microsecond else ""
    if minutes == 0 and draw(st.booleans()):
        zone = draw(st.sampled_from(["Z", "z"]))
    else:
        zone = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    sep = draw(st.sampled_from(["T", "t"]))
    return local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + fraction + zone


@st.composite
def time_leaf(draw: st.DrawFn, seeds: Seeded) -> Expr:
    field = draw(st.sampled_from(TIMES))
    known = sorted({r[name] for r in seeds.rows for name in TIMES if r[name] is not None})
    base = draw(st.sampled_from(known))
    nudge = draw(st.sampled_from(["same", "same", "+1us", "-1us", "ms", "s"]))
    when = {
        "same": base,
        "+1us": base + timedelta(microseconds=1),
        "-1us": base - timedelta(microseconds=1),
        "ms": base.replace(microsecond=base.microsecond // 1000 * 1000),
        "s": base.replace(microsecond=0),
    }[nudge]
    if draw(st.integers(0, 4)) == 0:
        others = draw(st.lists(st.sampled_from(known), max_size=3))
        values = [when, *others]
        text = ", ".join(f'"{rfc3339(draw, v)}"' for v in values)
        return Expr(f"{field} IN ({text})", on(field, lambda v: v in values))
    op = draw(st.sampled_from(list(OPS)))
    return Expr(f'{field} {op} "{rfc3339(draw, when)}"', on(field, lambda v: OPS[op](v, when)))


@st.composite
def other_leaf(draw: st.DrawFn, seeds: Seeded) -> Expr:
    kind = draw(st.sampled_from(["is_active", "id", "null"]))
    if kind == "null":
        field = draw(st.sampled_from(FIELDS))
        op = draw(st.sampled_from(["=", "!="]))
        return Expr(f"{field} {op} null", lambda r: (r[field] is None) == (op == "="))
    if kind == "is_active":
        if draw(st.booleans()):
            flags = draw(st.lists(st.booleans(), min_size=1, max_size=2))
            text = ", ".join(str(b).lower() for b in flags)
            return Expr(f"is_active IN ({text})", lambda r: r["is_active"] in flags)
        op = draw(st.sampled_from(["=", "!="]))
        flag = draw(st.booleans())
        return Expr(f"is_active {op} {str(flag).lower()}", lambda r: OPS[op](r["is_active"], flag))

    def spell(ident: uuid.UUID) -> str:
        # Either case; other spellings are refused (tests/e2e/test_ids.py).
        upper = draw(st.booleans())
        return str(ident).upper() if upper else str(ident)

    pick = st.sampled_from([r["id"] for r in seeds.rows]) | st.uuids()
    if draw(st.booleans()):
        idents = draw(st.lists(pick, min_size=1, max_size=4))
        text = ", ".join(f'"{spell(i)}"' for i in idents)
        return Expr(f"id IN ({text})", lambda r: r["id"] in idents)
    op = draw(st.sampled_from(["=", "!="]))
    ident = draw(pick)
    return Expr(f'id {op} "{spell(ident)}"', lambda r: OPS[op](r["id"], ident))


MAX_DEPTH = 12  # below the server's 16, so that no valid filter is refused for depth


@st.composite
def compound(draw: st.DrawFn, children: st.SearchStrategy[Expr]) -> Expr:
    how = draw(st.sampled_from(["AND", " ", "OR", "NOT ", "-", "mixed"]))

    def part(node: Expr, level: int) -> tuple[str, int]:
        """`node` where at least `level` is needed, in parentheses if it must be (or by chance)."""
        if node.level < level or draw(st.integers(0, 5)) == 0:
            return f"({node.text})", node.depth + 1
        return node.text, node.depth

    if how in ("NOT ", "-"):
        node = draw(children)
        text, depth = part(node, 4)
        if depth + 1 > MAX_DEPTH:
            return node
        return Expr(how + text, lambda r: not3(node.value(r)), 3, depth + 1, restrictions(node))
    if how == "mixed":
        # OR binds tighter than AND: `a AND b OR c` is `a AND (b OR c)`, `a OR b c` is `(a OR b) c`.
        a, b, c = draw(st.lists(children, min_size=3, max_size=3))
        joiner = draw(st.sampled_from([" AND ", " "]))
        (ta, da), (tb, db), (tc, dc) = part(a, 3), part(b, 3), part(c, 3)
        level, depth = (0 if joiner == " AND " else 1), max(da, db, dc)
        if draw(st.booleans()):
            return Expr(
                ta + joiner + tb + " OR " + tc,
                lambda r: all3([a.value(r), any3([b.value(r), c.value(r)])]),
                level,
                depth,
                restrictions(a, b, c),
            )
        return Expr(
            ta + " OR " + tb + joiner + tc,
            lambda r: all3([any3([a.value(r), b.value(r)]), c.value(r)]),
            level,
            depth,
            restrictions(a, b, c),
        )
    nodes = draw(st.lists(children, min_size=2, max_size=3))
    level = {"AND": 0, " ": 1, "OR": 2}[how]
    parts = [part(n, level + 1) for n in nodes]
    depth = max(d for _, d in parts)
    if depth > MAX_DEPTH:
        return nodes[0]
    text = {"AND": " AND ", " ": " ", "OR": " OR "}[how].join(t for t, _ in parts)
    combine = any3 if how == "OR" else all3

    def value(r: Row) -> Value:
        return combine(n.value(r) for n in nodes)

    return Expr(text, value, level, depth, restrictions(*nodes))


def filters(seeds: Seeded) -> st.SearchStrategy[Expr]:
    leaves = string_leaf(seeds) | string_leaf(seeds) | time_leaf(seeds) | other_leaf(seeds)
    blank = st.sampled_from(["", "  "]).map(lambda t: Expr(t, lambda r: True))
    # One filter in ten or so is blank: every user.
    return st.one_of(blank, *[st.recursive(leaves, compound, max_leaves=5)] * 9)


# ------------------------------------------------------------ invalid filters

A_UUID = "123e4567-e89b-12d3-a456-426614174000"
A_TIME = "2026-01-01T00:00:00Z"

# Restrictions the server must refuse wherever they stand.
BAD_LEAVES = {
    "unknown field": [
        'nickname = "x"',
        'Email = "ann@example.com"',
        "version = 1",
        'tenant_id = "t"',
        f'purge_time > "{A_TIME}"',
        'etag = "1"',
        'user.email = "x"',
    ],
    "wrong literal": [
        'is_active = "true"',
        "is_active = 1",
        "email = 1",
        "display_name = true",
        "created_by = 2.5",
        'create_time > "2026-01-01"',
        'create_time = "2026-01-01T00:00:00"',
        'update_time < "yesterday"',
        'delete_time >= "2026-13-01T00:00:00Z"',
        'create_time > "2026-01-01T00:00:00.000000001Z"',
        f'create_time = "{A_TIME[:-1]}*"',
        "create_time > 5",
        'id = "not-a-uuid"',
        "id = 42",
        'username IN ("a", 1)',
        f'id IN ("{A_UUID}", true)',
    ],
    "ordering on bool or uuid": [
        "is_active < true",
        "is_active >= false",
        f'id > "{A_UUID}"',
        f'id <= "{A_UUID}"',
    ],
    "operator on the wrong kind": [
        "is_active =~ true",
        f'create_time =~ "{A_TIME}"',
        f'id : "{A_UUID[:8]}"',
        "is_active : true",
        f'delete_time : "{A_TIME}"',
        'email < "a*"',
        'display_name >= "*x"',
        'email : "a*b"',
        'username IN ("a*")',
        "email < null",
        "created_by =~ null",
        "display_name : null",
        'email IN ("a", null)',
        "email IN (" + ", ".join(f'"{i}"' for i in range(101)) + ")",
        'display_name = "\\q"',
    ],
    "syntax": [
        'email = "x" AND',
        'email "x"',
        '= "x"',
        "()",
        'NOT NOT email = "x"',
        'email = "a" OR',
        "email IN ()",
        'email IN ("a",)',
        'email == "x"',
        'email = "x\x00"',
    ],
}


@st.composite
def invalid_filters(draw: st.DrawFn, seeds: Seeded) -> tuple[str, str]:
    """(filter, why it is invalid)."""
    kind = draw(
        st.sampled_from([*BAD_LEAVES, "unbalanced", "too long", "too deep", "unterminated"])
    )
    valid = draw(seeds.filters).text.strip() or 'email = "x"'
    if kind == "unbalanced":
        return draw(st.sampled_from([f"({valid}", f"{valid})", f"(({valid})", f"({valid}))"])), kind
    if kind == "too long":
        if draw(st.booleans()):
            return valid + " " * (2049 - len(valid)), kind
        return " OR ".join([f"({valid})"] * (2052 // (len(valid) + 6) + 1)), kind
    if kind == "too deep":
        levels = draw(st.integers(17, 24))
        return "NOT (" * levels + valid + ")" * levels, kind
    if kind == "unterminated":
        # Last, so that no quote later in the text can close it.
        opened = draw(st.sampled_from(['"ab', "'ab", '"a\\"']))
        return f"{valid} AND display_name = {opened}", kind
    bad = draw(st.sampled_from(BAD_LEAVES[kind]))
    shape = draw(st.sampled_from(["{b}", "{v} AND ({b})", "({b}) OR ({v})", "{v} -({b})"]))
    return shape.format(v=valid, b=bad), kind


# ------------------------------------------------------------ calls


async def listed(users: Stub, tenant: str, text: str, show_deleted: bool) -> list[user_pb2.User]:
    """Every page of ListUsers at page_size 1000."""
    got: list[user_pb2.User] = []
    token = ""
    while True:
        request = user_pb2.ListUsersRequest(
            page_size=1000, page_token=token, filter=text, show_deleted=show_deleted
        )
        page = await users.ListUsers(request, metadata=md(tenant))
        got.extend(page.users)
        token = page.next_page_token
        if not token:
            return got
        assert len(got) <= len(SEEDS), "more pages than users"


async def counted(users: Stub, tenant: str, text: str, show_deleted: bool) -> int:
    request = user_pb2.CountUsersRequest(filter=text, show_deleted=show_deleted)
    reply = await users.CountUsers(request, metadata=md(tenant))
    assert reply.total_size_exact
    return int(reply.total_size)


PROPERTY = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(data=st.data())
async def test_server_agrees_with_python_reading_of_filter(
    users: Stub, tenant: str, data: st.DataObject
) -> None:
    seeds = await seeded(users, tenant)
    node = data.draw(seeds.filters, label="filter")
    show_deleted = data.draw(st.booleans(), label="show_deleted")
    visible = [r for r in seeds.rows if show_deleted or r["delete_time"] is None]
    # Each restriction of a compound filter on its own first: no AND or OR can hide it there.
    for part in node.parts:
        alone = {str(r["id"]) for r in visible if part.value(r) is True}
        assert {user.id for user in await listed(users, tenant, part.text, show_deleted)} == alone

    expected = {str(r["id"]) for r in visible if node.value(r) is True}
    got = await listed(users, tenant, node.text, show_deleted)
    ids = [user.id for user in got]
    assert len(ids) == len(set(ids)), "a user listed twice"
    assert set(ids) == expected
    by_id = {str(r["id"]): r["message"] for r in seeds.rows}
    assert all(user == by_id[user.id] for user in got), "a listed user differs from the one written"
    assert await counted(users, tenant, node.text, show_deleted) == len(expected)


@settings(PROPERTY, max_examples=30)
@given(data=st.data())
async def test_invalid_filter_is_invalid_argument(
    users: Stub, tenant: str, data: st.DataObject
) -> None:
    seeds = await seeded(users, tenant)
    text, kind = data.draw(seeds.invalid_filters, label="invalid filter")
    show_deleted = data.draw(st.booleans(), label="show_deleted")
    request = user_pb2.ListUsersRequest(page_size=1000, filter=text, show_deleted=show_deleted)
    for call in (
        users.ListUsers(request, metadata=md(tenant)),
        users.CountUsers(
            user_pb2.CountUsersRequest(filter=text, show_deleted=show_deleted),
            metadata=md(tenant),
        ),
    ):
        error = await fails(call)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, (kind, error.message)
        assert error.reason == "INVALID_FILTER", kind
        assert error.violations.get("filter"), (kind, error.violations)


async def test_timestamp_digits_past_microseconds_are_not_dropped(users: Stub, tenant: str) -> None:
    made = await users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(username="ns", email="ns@example.com")),
        metadata=md(tenant),
    )
    created = stamp(made, "create_time")
    assert created is not None
    later = created.strftime("%Y-%m-%dT%H:%M:%S.%f") + "001Z"  # one nanosecond after it

    async def answer(op: str) -> int | str:
        """The count for `create_time <op> later`, or the reason it was refused."""
        try:
            return await counted(users, tenant, f'create_time {op} "{later}"', False)
        except grpc.aio.AioRpcError as exc:
            return details(exc).reason

    # Either reading is right: compare exactly, or refuse what the database cannot hold.
    truth = {"<": 1, "<=": 1, "=": 0, "!=": 1, ">": 0, ">=": 0}
    got = {op: await answer(op) for op in truth}
    assert all(got[op] in (truth[op], "INVALID_FILTER") for op in truth), got
