"""A bulk write checked whole before any I/O: every session id, every value.

``MetadataStore.set_many`` takes what ``set_metadata`` takes, for many sessions
at once. Here each session id is checked and each session's values validated
and encoded exactly as a single write does; a bad value anywhere raises one
:class:`pydantic.ValidationError` listing every bad field of every session,
each located as ``(session_id, key, ...)``.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

from sessionmeta.core.codec import EncodedValue, encode_model
from sessionmeta.core.spec import HasSessionId, ModelSpec, ModelT, check_session_id
from sessionmeta.errors import InvalidArgumentError

__all__ = ["encode_sessions", "session_ids"]

_ERROR_TYPES = frozenset(typing.get_args(ErrorType))


def encode_sessions(
    spec: ModelSpec[ModelT], values: Mapping[str, ModelT | Mapping[str, Any]]
) -> dict[str, list[EncodedValue]]:
    """The rows to write for each session of ``values``, in session id order.

    Raises :class:`~sessionmeta.InvalidSessionIdError` for a bad session id,
    :class:`~sessionmeta.UnknownKeyError` or
    :class:`~sessionmeta.InvalidArgumentError` for a session's bad argument,
    and one :class:`pydantic.ValidationError` for every bad value of every
    session. A session with nothing to write is left out, as ``set_metadata``
    writes nothing for it.
    """
    if not isinstance(values, Mapping):
        raise InvalidArgumentError(
            f"set_many takes a mapping of session ids to values, not {type(values).__name__}"
        )
    encoded: dict[str, list[EncodedValue]] = {}
    errors: list[InitErrorDetails] = []
    seen: set[str] = set()
    for session, session_values in values.items():
        session_id = check_session_id(session)
        if session_id in seen:
            raise InvalidArgumentError(f"session {session_id!r} is given twice")
        seen.add(session_id)
        try:
            rows = encode_model(spec, spec.validate_values(session_values, session_id=session_id))
        except ValidationError as exc:
            errors.extend(_located(session_id, exc))
            continue
        if rows:
            encoded[session_id] = rows
    if errors:
        raise ValidationError.from_exception_data(spec.name, errors)
    return dict(sorted(encoded.items()))


def session_ids(sessions: Iterable[str | HasSessionId], call: str) -> list[str]:
    """The distinct, checked session ids of ``sessions`` (a list, not one id), in order."""
    if isinstance(sessions, str) or not isinstance(sessions, Iterable):
        raise InvalidArgumentError(f"{call} takes a list of session ids, not {sessions!r}")
    return list(dict.fromkeys(check_session_id(session) for session in sessions))


def _located(session_id: str, exc: ValidationError) -> list[InitErrorDetails]:
    """``exc``'s errors, each located under ``session_id``."""
    located: list[InitErrorDetails] = []
    for error in exc.errors():
        detail: InitErrorDetails
        if error["type"] in _ERROR_TYPES:
            detail = {
                "type": typing.cast(ErrorType, error["type"]),
                "loc": (session_id, *error["loc"]),
                "input": error["input"],
            }
            if "ctx" in error:
                detail["ctx"] = error["ctx"]
        else:
            # sessionmeta's own errors (a value that would not read back unchanged).
            detail = {
                "type": PydanticCustomError(error["type"], error["msg"]),
                "loc": (session_id, *error["loc"]),
                "input": error["input"],
            }
        located.append(detail)
    return located
