"""What OpenTelemetry's database conventions say of a statement and of a database:
the operation and table a statement's span is named by (`SELECT users`), and the
attributes naming the database and its server. Shared by statement spans
(server/tracing.py) and the statement-time histogram (server/db_metrics.py).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from types import MappingProxyType

from sqlalchemy.engine import URL

DB_SYSTEM = "db.system"
# The database's name: db.namespace in the current conventions, db.name before them;
# both are set, as OTEL_SEMCONV_STABILITY_OPT_IN=database/dup would.
DB_NAMESPACE, DB_NAME = "db.namespace", "db.name"
DB_OPERATION = "db.operation"
DB_OPERATION_NAME = "db.operation.name"
DB_COLLECTION_NAME = "db.collection.name"
DB_SQL_TABLE = "db.sql.table"
DB_STATEMENT = "db.statement"
SERVER_ADDRESS, SERVER_PORT = "server.address", "server.port"
# PostgreSQL's when a URL names none.
_DEFAULT_PORTS = {"postgresql": 5432}

_NAME = r'(?:"[^"]+"|[A-Za-z_][\w$]*)'
_TABLE = rf"({_NAME}(?:\.{_NAME})?)"
# The first table a statement names, after the word that names it for its operation.
_TARGETS = {
    "SELECT": re.compile(rf"\bFROM\s+{_TABLE}", re.IGNORECASE),
    "DELETE": re.compile(rf"\bFROM\s+{_TABLE}", re.IGNORECASE),
    "INSERT": re.compile(rf"\bINTO\s+{_TABLE}", re.IGNORECASE),
    "UPDATE": re.compile(rf"^\s*UPDATE\s+(?:ONLY\s+)?{_TABLE}", re.IGNORECASE),
}
_ANY_TARGET = re.compile(rf"\b(?:FROM|INTO|UPDATE)\s+{_TABLE}", re.IGNORECASE)


# Repogate runs few distinct statements (SQLAlchemy caches their text): each one's
# summary is worked out once.
@functools.lru_cache(maxsize=1024)
def summary(statement: str) -> tuple[str, str | None]:
    """The statement's operation (its first word, upper case) and the first table it
    names for that operation, None when it names none (BEGIN, SELECT 1)."""
    words = statement.split(None, 1)
    if not words:
        return "", None
    operation = words[0].upper()
    pattern = _TARGETS.get(operation, _ANY_TARGET if operation == "WITH" else None)
    match = pattern.search(statement) if pattern is not None else None
    return operation, None if match is None else match[1].replace('"', "")


def span_name(operation: str, table: str | None) -> str:
    """`{db.operation.name} {db.collection.name}`, as the conventions name a span."""
    return operation if table is None else f"{operation} {table}"


def database_attributes(system: str, url: URL) -> Mapping[str, str | int]:
    """The attributes every statement on the database at `url` shares."""
    attributes: dict[str, str | int] = {DB_SYSTEM: system}
    if url.database:
        attributes[DB_NAMESPACE] = attributes[DB_NAME] = url.database
    if system != "sqlite" and url.host:
        attributes[SERVER_ADDRESS] = url.host
        port = url.port or _DEFAULT_PORTS.get(system)
        if port:
            attributes[SERVER_PORT] = port
    return MappingProxyType(attributes)
