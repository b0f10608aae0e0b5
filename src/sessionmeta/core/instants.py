"""Datetimes and times whose UTC offset has seconds, kept exactly: no database, no I/O.

Pydantic writes an offset as ``+HH:MM`` and reads no more, so ``+00:19:32`` (local
mean time, as in Amsterdam until 1937) would come back 32 seconds off. A metadata
model's schema is rewritten here so that such a value is written in Python's ISO
form, ``+HH:MM:SS[.ffffff]``, and read back from it. Every other value keeps
Pydantic's own form, so what is stored for whole-minute offsets does not change.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

__all__ = ["second_offsets_schema", "with_second_offsets"]

# The end of an ISO datetime or time whose offset has seconds: "+00:19:32", "-00:00:30.5".
_SECOND_OFFSET = re.compile(r"([+-])(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?$")
_PARSERS: dict[str, Any] = {"datetime": dt.datetime.fromisoformat, "time": dt.time.fromisoformat}


def _parsed(text: str, parse: Any) -> Any:
    """The value of ``text``, or ``text`` itself when it is no ISO value with offset seconds."""
    # What the pattern needs, tested first by position: nearly every value read has an
    # offset of whole minutes, and a listing reads one per session. (Its "$" also matches
    # before a final newline: such text goes to the pattern.)
    dot = text.rfind(".", -7)
    end = len(text) if dot == -1 else dot
    if not text.endswith("\n") and (
        end < 9 or text[end - 3] != ":" or text[end - 6] != ":" or text[end - 9] not in "+-"
    ):
        return text
    found = _SECOND_OFFSET.search(text)
    if found is None:
        return text
    sign, hours, minutes, seconds, fraction = found.groups()
    # Parsed here, not by fromisoformat, which drops an offset's microseconds (3.11).
    offset = dt.timedelta(
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds),
        microseconds=int((fraction or "0").ljust(6, "0")),
    )
    try:
        local = parse(text[: found.start()])
        return local.replace(tzinfo=dt.timezone(-offset if sign == "-" else offset))
    except (ValueError, TypeError):
        return text  # Pydantic's own validation says what is wrong with it.


def _has_second_offset(value: Any) -> bool:
    if not isinstance(value, (dt.datetime, dt.time)):
        return False
    offset = value.utcoffset()
    return offset is not None and offset % dt.timedelta(minutes=1) != dt.timedelta(0)


def _written(value: Any, handler: core_schema.SerializerFunctionWrapHandler) -> Any:
    if _has_second_offset(value):
        return value.isoformat()
    return handler(value)


def _reader(kind: str) -> core_schema.NoInfoValidatorFunction:
    parse = _PARSERS[kind]

    def read(value: Any) -> Any:
        return _parsed(value, parse) if isinstance(value, str) else value

    return read


def with_second_offsets(schema: Any) -> Any:
    """``schema`` with every datetime and time in it read and written with offset seconds.

    Returns a new schema where anything changes: the schemas Pydantic caches for the
    types inside are left alone.
    """
    if isinstance(schema, list):
        return [with_second_offsets(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    # A serializer of the application's own decides how its values are written.
    if kind in _PARSERS and "serialization" not in schema:
        # A before-validator: what the wrapped schema is handed, at a smaller cost per
        # value than a wrap-validator's handler.
        return core_schema.no_info_before_validator_function(
            _reader(kind),
            schema,
            serialization=core_schema.wrap_serializer_function_ser_schema(
                _written, when_used="json-unless-none"
            ),
        )
    return {name: with_second_offsets(part) for name, part in schema.items()}


def second_offsets_schema(source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
    """A ``__get_pydantic_core_schema__`` that applies :func:`with_second_offsets`."""
    rewritten: CoreSchema = with_second_offsets(handler(source))
    return rewritten
