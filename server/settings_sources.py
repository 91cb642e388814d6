"""Where Settings come from, strictly: REPOGATE_* variables, secrets from *_FILE, clear errors.

Every REPOGATE_* variable in the environment must name a setting: a typo
(REPOGATE_DATABSE_URL) is a settings error naming the closest valid name, not a
server quietly started on its defaults. Left alone are the names Repogate's own
tools and clients read (those starting with one of RESERVED_PREFIXES, and
CLIENT_VARIABLES) and the service links Kubernetes sets for a Service named repogate.

A secret setting X (marked FROM_FILE in Settings) may instead be given as
REPOGATE_X_FILE, the path of a file holding it (a mounted Kubernetes or Docker
secret); one trailing newline is dropped. Setting both is an error, and so is a file
that cannot be read.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

PREFIX = "REPOGATE_"
# Not settings: the test suite's (REPOGATE_TEST_REDIS_URL, ...), the benchmarks', and
# clients' own variables.
RESERVED_PREFIXES = ("REPOGATE_TEST_", "REPOGATE_BENCH_", "REPOGATE_CLIENT_")
# Read by the example clients (clients/), which may share an environment with a server.
CLIENT_VARIABLES = frozenset({"REPOGATE_ADDRESS", "REPOGATE_PROTOS"})
# What Kubernetes sets in every Pod of a namespace with a Service named repogate (or
# repogate-*), unless enableServiceLinks is false: REPOGATE_SERVICE_HOST=10.0.0.7,
# REPOGATE_PORT=tcp://10.0.0.7:50051, REPOGATE_PORT_50051_TCP_PORT=50051, ... Left alone
# when both the name and the value have that shape.
_SERVICE_LINK = re.compile(
    r"REPOGATE(?:_[A-Z0-9_]+)?_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)"
)
_SERVICE_LINK_VALUE = re.compile(r"[0-9a-fA-F.:]+|(?:tcp|udp|sctp)(?:://[0-9a-fA-F.:\[\]]+)?", re.I)
FILE_SUFFIX = "_FILE"
# Field(..., json_schema_extra=FROM_FILE): the setting may come from REPOGATE_<NAME>_FILE.
FROM_FILE: dict[str, Any] = {"from_file": True}

# The files secrets were read from while a Settings is built (see Settings.__init__).
read_files: ContextVar[dict[str, Path] | None] = ContextVar("read_files", default=None)


class SettingsError(ValueError):
    """A settings error found before validation: an unknown variable, an unreadable file."""


def variables(field_name: str, field: FieldInfo) -> list[str]:
    """The variables that set a field, as documented (upper case)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [c.upper() for c in alias.choices if isinstance(c, str) and c.startswith(PREFIX)]
    return [PREFIX + field_name.upper()]


def from_file(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("from_file") is True


class StrictEnvSource(EnvSettingsSource):
    """The environment source, refusing unknown REPOGATE_* names and reading *_FILE."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = dict(os.environ)
        fields = self.settings_cls.model_fields
        known = {name: field for field, info in fields.items() for name in variables(field, info)}
        files = {
            name + FILE_SUFFIX: (name, field)
            for field, info in fields.items()
            if from_file(info)
            for name in variables(field, info)
        }
        for typed, value in environ.items():
            name = typed.upper()
            if _ours(name, value) and name not in known and name not in files:
                raise SettingsError(_unknown(typed, [*known, *files]))
        recorded = read_files.get()
        for typed, path in list(environ.items()):
            found = files.get(typed.upper())
            if found is None or not path:
                continue
            plain, field = found
            if any(k.upper() == plain and v for k, v in environ.items()):
                raise SettingsError(f"set {plain} or {typed}, not both")
            environ[plain] = read_secret(typed, Path(path))
            if recorded is not None:
                recorded[field] = Path(path)
        return parse_env_vars(
            environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def read_secret(variable: str, path: Path) -> str:
    """The file's text without its trailing newline; SettingsError naming `variable`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(f"{variable}: cannot read {path}: {reason}") from exc
    return text.removesuffix("\n").removesuffix("\r")


def _ours(name: str, value: str) -> bool:
    """Whether a variable is meant for the server: REPOGATE_*, but none of the above."""
    if not name.startswith(PREFIX) or name.startswith(RESERVED_PREFIXES):
        return False
    service_link = _SERVICE_LINK.fullmatch(name) and _SERVICE_LINK_VALUE.fullmatch(value)
    return name not in CLIENT_VARIABLES and not service_link


def _unknown(typed: str, valid: list[str]) -> str:
    # Compared without the prefix they all share, which would make anything look close.
    tails = [name.removeprefix(PREFIX) for name in valid]
    close = difflib.get_close_matches(typed.upper().removeprefix(PREFIX), tails, n=1, cutoff=0.6)
    hint = f"; did you mean {PREFIX}{close[0]}?" if close else " (see docs/configuration-files.md)"
    return f"{typed} is not a Repogate setting{hint}"


def describe(
    exc: ValidationError | SettingsError,
    settings_cls: type[BaseSettings],
    given: Mapping[str, str] | None = None,
) -> str:
    """What is wrong, one line per error, naming each variable as it was typed in the
    environment (or the command-line option in `given`, field -> option)."""
    if isinstance(exc, SettingsError):
        return str(exc)
    return "\n".join(_line(error, settings_cls, given or {}) for error in exc.errors())


# Expected forms in place of pydantic's words for the commonest mistakes.
_FORMS = {
    "bool_parsing": "must be true or false (or 1/0, yes/no, on/off)",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
}


def _line(error: Any, settings_cls: type[BaseSettings], given: Mapping[str, str]) -> str:
    message = _FORMS.get(error["type"]) or str(error["msg"])
    if error["type"] in ("string_too_short", "too_short"):  # a SecretStr is "too_short"
        message = f"must be at least {error['ctx']['min_length']} characters long"
    message = re.sub(r"^(Value error|Assertion failed), ", "", message)
    message = re.sub(r"^Input should be", "must be", message)
    message = message.replace("Path does not point to a file", "must be the path of a file")
    loc = error.get("loc") or ()
    if not loc:
        return message
    return f"{_as_typed(str(loc[0]), settings_cls, given)}: {message}"


def _as_typed(key: str, settings_cls: type[BaseSettings], given: Mapping[str, str]) -> str:
    """The variable (or option) that set a field, known by its name or an alias."""
    for field, info in settings_cls.model_fields.items():
        names = variables(field, info)
        if key != field and key.upper() not in names:
            continue
        if field in given:
            return given[field]
        for typed in _environ_names(names, from_file(info)):
            return typed
        return names[0] if names else key
    return key


def _environ_names(names: list[str], files: bool) -> Iterator[str]:
    wanted = {*names, *(n + FILE_SUFFIX for n in names if files)}
    return (typed for typed, value in os.environ.items() if typed.upper() in wanted and value)
