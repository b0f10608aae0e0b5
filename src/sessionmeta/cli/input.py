"""Turning command-line text into checked values: URLs, model paths, values, conditions.

Everything here runs before the command line touches a database, so bad input
is refused with nothing written. No I/O except importing the user's model.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import URL, make_url

from sessionmeta.core.filters import Condition, Operator
from sessionmeta.core.spec import FieldSpec, ModelSpec, SessionMeta
from sessionmeta.errors import SessionMetaError, UnsupportedDialectError
from sessionmeta.sql.dialects import BACKENDS, backend_named

__all__ = [
    "UsageError",
    "describe_validation_error",
    "load_model",
    "model_path",
    "parse_assignments",
    "parse_clause",
    "parse_url",
    "require_model",
    "value_from_text",
]


class UsageError(SessionMetaError):
    """Input the command line refuses: shown as one line, exit code 2."""


def parse_url(text: str) -> URL:
    """A database URL for an async driver sessionmeta supports, or :class:`UsageError`."""
    try:
        url = make_url(text)
    except Exception as exc:
        raise UsageError(
            f"malformed database URL {text!r}: {exc}; expected e.g. "
            "postgresql+asyncpg://user@host/db or sqlite+aiosqlite:///file.sqlite3"
        ) from None
    supported = [
        f"{name}+{driver}"
        for backend in BACKENDS
        for name in backend.dialect_names[:1]
        for driver in backend.drivers
    ]
    try:
        backend = backend_named(url.get_backend_name())
    except UnsupportedDialectError:
        backend = None
    if "+" not in url.drivername and backend is not None:
        driver = backend.default_driver
    elif backend is not None and url.get_driver_name() in backend.drivers:
        driver = f"{backend.dialect_names[0]}+{url.get_driver_name()}"
    else:
        raise UsageError(
            f"database URL {url.render_as_string(hide_password=True)!r} names driver "
            f"{url.drivername!r}; use one of {', '.join(supported)}"
        )
    try:
        url = url.set(drivername=driver)
        # make_url parses the port lazily in some versions: touch it now.
        _ = url.port
    except Exception as exc:
        raise UsageError(f"malformed database URL {text!r}: {exc}") from None
    return url


def load_model(path: str) -> type[SessionMeta]:
    """Import ``package.module:ClassName`` and check it is a storable metadata model."""
    module_name, colon, class_name = path.partition(":")
    if not colon or not module_name or not class_name:
        raise UsageError(f"model {path!r} is not of the form package.module:ClassName")
    # Like `python -m`, let a model module in the current directory be found.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(
            f"cannot import model module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    found: Any = module
    for part in class_name.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise UsageError(f"module {module_name!r} has no {class_name!r}")
    if not (isinstance(found, type) and issubclass(found, SessionMeta)):
        raise UsageError(f"{path!r} is not a subclass of sessionmeta.SessionMeta")
    try:
        ModelSpec(found)
    except SessionMetaError as exc:
        raise UsageError(f"model {path!r} cannot be stored: {exc}") from None
    return found


def model_path(args: argparse.Namespace) -> str | None:
    """The model the command was given: ``--model``, else ``$SESSIONMETA_MODEL``, else none."""
    path: str | None = args.model or os.environ.get("SESSIONMETA_MODEL") or None
    return path


def require_model(args: argparse.Namespace) -> type[SessionMeta]:
    """The model the command was given, imported and checked; :class:`UsageError` if none."""
    path = model_path(args)
    if path is None:
        raise UsageError("no model: give --model package.module:ClassName or set SESSIONMETA_MODEL")
    return load_model(path)


def _validates(field: FieldSpec, value: Any) -> bool:
    try:
        field.adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def value_from_text(field: FieldSpec, text: str) -> Any:
    """The value ``text`` means for ``field``: its JSON reading when that fits, else the text.

    So ``priority=3`` is the number 3 and ``tags=["a","b"]`` a list, while
    ``title=3`` (a string field) and ``day=2024-05-06`` stay text for the
    field's type to validate. Write ``'"3"'`` to force a JSON string.
    """
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    if isinstance(parsed, str) or _validates(field, parsed):
        return parsed
    if _validates(field, text):
        return text
    return parsed


def _split_assignment(argument: str) -> tuple[str, str]:
    key, equals, text = argument.partition("=")
    if not equals or not key:
        raise UsageError(f"{argument!r} is not of the form key=value")
    return key, text


def parse_assignments(spec: ModelSpec[Any], arguments: list[str]) -> dict[str, Any]:
    """``key=value`` arguments as a mapping of storage keys to values (still to validate)."""
    values: dict[str, Any] = {}
    for argument in arguments:
        key, text = _split_assignment(argument)
        field = spec.field(key)
        if field.key in values:
            raise UsageError(f"key {field.key!r} is given twice")
        values[field.key] = value_from_text(field, text)
    return values


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic error as one line: each bad key, what is wrong, and the value given."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']} (got {error['input']!r})")
    return "; ".join(parts)


OPERATORS: tuple[Operator, ...] = typing.get_args(Operator)
_SYMBOLS: dict[str, Operator] = {
    "!=": "ne",
    ">=": "ge",
    "<=": "le",
    "=": "eq",
    ">": "gt",
    "<": "lt",
    "~": "contains",
}
_NAMED = re.compile(r"(?P<key>[^:=!<>~?]+):(?P<op>[A-Za-z_]+)=(?P<value>.*)", re.DOTALL)
_SYMBOLIC = re.compile(r"(?P<key>[^:=!<>~?]+)(?P<op>!=|>=|<=|=|>|<|~)(?P<value>.*)", re.DOTALL)


def _clause_value(field: FieldSpec, op: str, text: str) -> Any:
    if op in ("in", "not_in"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
        return [value_from_text(field, item) for item in text.split(",")]
    if op == "contains":
        # The element's type is the query API's to check; take the JSON reading or the text.
        try:
            return json.loads(text)
        except ValueError:
            return text
    return value_from_text(field, text)


def parse_clause(spec: ModelSpec[Any], argument: str) -> Condition:
    """Parse one condition: ``key=v``, ``key!=v``, ``key>v``, ``key>=v``, ``key<v``,
    ``key<=v``, ``key~v`` (contains), ``key?`` (exists), ``!key`` (missing), or the
    long form ``key:op=value`` with any operator (``key:in=a,b``)."""
    if argument.startswith("!") and argument[1:] and not _SYMBOLIC.search(argument[1:]):
        return Condition(spec.field(argument[1:]).key, "missing")
    if argument.endswith("?") and argument[:-1] and not _SYMBOLIC.search(argument[:-1]):
        return Condition(spec.field(argument[:-1]).key, "exists")
    named = _NAMED.fullmatch(argument)
    if named is not None:
        name = named["op"]
        if name not in OPERATORS:
            raise UsageError(
                f"unknown operator {name!r} in {argument!r}; use one of {', '.join(OPERATORS)}"
            )
        op = typing.cast(Operator, name)
        field = spec.field(named["key"])
        if op in ("exists", "missing"):
            return Condition(field.key, op)
        return Condition(field.key, op, _clause_value(field, op, named["value"]))
    symbolic = _SYMBOLIC.fullmatch(argument)
    if symbolic is None:
        raise UsageError(
            f"condition {argument!r} has no operator; write key=value, key!=value, key>value, "
            "key>=value, key<value, key<=value, key~value, key?, !key or key:OP=value"
        )
    field = spec.field(symbolic["key"])
    op = _SYMBOLS[symbolic["op"]]
    return Condition(field.key, op, _clause_value(field, op, symbolic["value"]))
