"""Unique fields: the declaration and what a model's declarations mean. Pure: no I/O.

A field declared ``Annotated[str | None, Unique()]`` holds each value in at most
one session; ``Unique(per="owner_id")`` in at most one session per value of
``owner_id``. What a session's values claim is ``sessionmeta.core.claims``; the
database enforces it (``sessionmeta.io.claims``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sessionmeta.errors import ModelDefinitionError

__all__ = ["Unique", "UniqueKey", "unique_keys"]


@dataclass(frozen=True)
class Unique:
    """Marks a field whose value at most one session may hold.

    ``external_id: Annotated[str | None, Unique()] = None``: two sessions never hold the
    same ``external_id``. ``Unique(per="owner_id")``: two sessions with the same
    ``owner_id`` never hold the same value (sessions without an ``owner_id`` form one
    group of their own). ``None`` is no value: any number of sessions may hold it.
    """

    per: str | None = None


class _Field(Protocol):
    """What a declaration is checked against: a ``spec.FieldSpec``."""

    @property
    def name(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def kind(self) -> str: ...


@dataclass(frozen=True)
class UniqueKey:
    """A unique field as stored: its key, and the storage key of its scope, if any."""

    key: str
    name: str
    per: str | None = None


def _declared(metadata: list[Any], where: str) -> Unique | None:
    found = [item for item in metadata if isinstance(item, Unique) or item is Unique]
    if len(found) > 1:
        raise ModelDefinitionError(f"{where}: Unique() is given more than once")
    if not found:
        return None
    marker = found[0]
    if not isinstance(marker, Unique):
        raise ModelDefinitionError(f"{where}: write Unique() (an instance), not Unique")
    return marker


def unique_keys(
    model_name: str, fields: Mapping[str, _Field], metadata: Mapping[str, list[Any]]
) -> dict[str, UniqueKey]:
    """The unique fields of a model, by storage key; refuses declarations that make no sense.

    ``fields`` are the model's fields by storage key, ``metadata`` each field's
    ``Annotated`` metadata by storage key.
    """
    by_name = {spec.name: spec for spec in fields.values()}
    found: dict[str, UniqueKey] = {}
    for key, spec in fields.items():
        where = f"{model_name}.{spec.name}"
        marker = _declared(metadata.get(key, []), where)
        if marker is None:
            continue
        if spec.kind not in ("scalar", "range"):
            raise ModelDefinitionError(
                f"{where}: Unique() needs a single value (a string, number, date, UUID, "
                "enum or bool); a list, set, dict or nested model cannot be unique"
            )
        per = marker.per
        if per is not None:
            scope = fields.get(per) if isinstance(per, str) else None
            scope = scope or (by_name.get(per) if isinstance(per, str) else None)
            if scope is None:
                raise ModelDefinitionError(
                    f"{where}: Unique(per={per!r}) names no field of {model_name}"
                )
            if scope.key == key:
                raise ModelDefinitionError(f"{where}: Unique(per=...) cannot name the field itself")
            if scope.kind not in ("scalar", "range"):
                raise ModelDefinitionError(
                    f"{where}: Unique(per={per!r}): the scope field must hold a single value, "
                    "not a list, set, dict or nested model"
                )
            per = scope.key
        found[key] = UniqueKey(key=key, name=spec.name, per=per)
    return found
