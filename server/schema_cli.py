"""`repogate schema check|plan|drop`: a declared schema (REPOGATE_SCHEMA) checked,
its database changes shown, and the explicit destructive step (docs/schema-migrations.md).

Exit codes: 0 done; 2 the schema is wrong or missing (the SchemaError says where);
3 refused: `plan` found changes that are not automatic, `drop` was not confirmed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from server.settings import Settings

if TYPE_CHECKING:
    from schema.declared import Declared
    from schema.model import ResourceSpec

REFUSED = 3


def add_commands(sub: Any) -> None:
    """Adds `schema` and its subcommands to the `repogate` parser."""
    schema = sub.add_parser("schema", help="check a declared schema, plan or drop its tables")
    commands = schema.add_subparsers(required=True, metavar="subcommand")
    check = commands.add_parser("check", help="load the schema and print its resources")
    check.set_defaults(func=_check)
    plan = commands.add_parser(
        "plan", help="print the changes `migrate` would make; exit 3 if any is refused"
    )
    plan.set_defaults(func=_plan)
    drop = commands.add_parser(
        "drop", help="drop a table or table.column the schema no longer declares"
    )
    drop.add_argument("target", metavar="TABLE[.COLUMN]")
    drop.add_argument("--yes", action="store_true", help="drop it (its data is lost)")
    drop.set_defaults(func=_drop)
    export = commands.add_parser(
        "export", help="write the schema with Repogate's protos, ready for buf generate"
    )
    export.add_argument("out", metavar="OUT", help="a directory to create or fill")
    export.set_defaults(func=_export)
    for command in (check, plan, drop, export):
        command.add_argument("--schema", help="the schema (default $REPOGATE_SCHEMA)")
        command.set_defaults(listen=None)


def schema_override(args: argparse.Namespace) -> dict[str, str]:
    """Settings overrides for `--schema`."""
    path = getattr(args, "schema", None)
    return {} if path is None else {"REPOGATE_SCHEMA": path}


def declared(settings: Settings) -> Declared | None:
    """The schema REPOGATE_SCHEMA names, declared; None without one. Raises SchemaError."""
    if settings.schema_path is None:
        return None
    from schema.declared import declare
    from schema.loading import load

    return declare(load(settings.schema_path))


def _required(path: str | None) -> str:
    """The schema's path; a SchemaError without one."""
    if path is None:
        from schema.model import SchemaError

        raise SchemaError("no schema: set REPOGATE_SCHEMA or pass --schema")
    return path


async def _check(settings: Settings, args: argparse.Namespace) -> int:
    from server.served_schema import declared_services

    _required(settings.schema_path)
    # Loaded once, and every method bound to a standard method or an extension.
    served = declared_services(settings.schema_path, settings.extensions)
    assert served is not None
    schema = served.declared
    for full_name, table in schema.tables.items():
        spec = schema.spec(full_name)
        print(f"{full_name}  table {table.name}  order by {spec.default_order}")
        for index in spec.indexes:
            unique = "unique " if index.unique else ""
            print(f"  {unique}index ({', '.join(index.fields)})")
        for line in _fields(spec):
            print(f"  {line}")
        for line in _related(spec, schema):
            print(f"  {line}")
    for service, bindings in served.services:
        print(f"{service}")
        for b in bindings:
            what = "extension" if b.spec is None else f"{b.verb} {b.spec.message.name}"
            print(f"  {b.method.name}  {what}")
    print(f"{len(schema.tables)} resources, {len(served.services)} services")
    return 0


def _fields(spec: ResourceSpec) -> list[str]:
    rows = []
    for f in spec.fields:
        kind = f"list<{f.element}>" if f.kind == "list" else f.kind
        words = ["optional"] if f.nullable else []
        for option, value in f.options.ListFields():
            if option.type == option.TYPE_BOOL:
                words.append(option.name)
            elif option.message_type is not None:
                inner = " ".join(f"{o.name}={_text(o, v)}" for o, v in value.ListFields())
                words.append(f"{option.name}({inner})")
            else:
                words.append(f"{option.name}={_text(option, value)}")
        rows.append((f.name, kind, " ".join(words)))
    width = max((len(name) for name, _, _ in rows), default=0)
    kinds = max((len(kind) for _, kind, _ in rows), default=0)
    return [f"{n:<{width}}  {k:<{kinds}}  {w}".rstrip() for n, k, w in rows]


def _related(spec: ResourceSpec, schema: Declared) -> list[str]:
    """A line per related field: `related tasks  children of Task via project_id ...`."""
    from schema.related import related

    lines = []
    for r in related(spec, lambda m: schema.schema.resources.get(m.full_name)):
        target = r.target.message.name
        if not r.children:
            lines.append(f"related {r.name}  parent {target} via {r.via}")
            continue
        words = [f"related {r.name}  children {target} via {r.via}", f"limit {r.limit}"]
        words += [f"order by {r.order_by}"] if r.order_by else []
        words += [f"truncated {r.truncated}"] if r.truncated else []
        lines.append(", ".join(words))
    return lines


def _text(option: Any, value: Any) -> str:
    if option.enum_type is not None:
        return str(option.enum_type.values_by_number[value].name)
    return json.dumps(value) if isinstance(value, str) else str(value)


async def _plan(settings: Settings, args: argparse.Namespace) -> int:
    from repositories.database import create_engine
    from repositories.migrate import current_revision, head_revision
    from schema.migrations import plan

    _required(settings.schema_path)
    schema = declared(settings)
    assert schema is not None
    engine = create_engine(settings.database_url, settings.engine_options())
    try:
        at, head = await current_revision(engine), head_revision()
        async with engine.connect() as conn:
            planned = await conn.run_sync(plan, schema)
    finally:
        await engine.dispose()
    if at != head:
        print(f"-- Repogate's own migrations run first: from {at or 'nothing'} to {head}")
    for step in planned.steps:
        print(f"-- {step.summary}")
        for statement in step.statements:
            print(f"{statement};")
    if not planned.steps:
        print("-- the declared tables are up to date")
    for refusal in planned.refusals:
        print(f"refused: {refusal}", file=sys.stderr)
    return REFUSED if planned.refusals else 0


async def _drop(settings: Settings, args: argparse.Namespace) -> int:
    from repositories.database import create_engine
    from repositories.migrate import locked
    from schema.migrations import drop, drop_statements

    schema = declared(settings)
    engine = create_engine(settings.database_url, settings.engine_options())
    try:
        if not args.yes:
            async with engine.connect() as conn:
                statements = await conn.run_sync(drop_statements, args.target, schema)
            print("\n".join(f"{s};" for s in statements))
            print(f"not dropped: {args.target}'s data would be lost; add --yes", file=sys.stderr)
            return REFUSED
        statements = await locked(engine, drop, args.target, schema)
    finally:
        await engine.dispose()
    print("\n".join(f"{s};" for s in statements))
    print(f"dropped {args.target}")
    return 0


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from schema.export import export

    for path in export(_required(settings.schema_path), args.out):
        print(path)
    return 0
