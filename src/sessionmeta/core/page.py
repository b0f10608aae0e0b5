"""What queries return: a page of results that knows where the next page starts.

A :class:`Page` is a list to Python, and to Pydantic (so to FastAPI, when an
endpoint declares it as its return type or ``response_model``) an object
``{"items": [...], "next_cursor": ...}``: the cursor is serialized with the
items, and the JSON schema shows both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, get_args

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

from sessionmeta.core.spec import ModelT

__all__ = ["Page", "SessionListing"]

T = TypeVar("T")


class Page(list[T], Generic[T]):
    """A list of results; ``next_cursor`` fetches the following page, ``None`` after the last."""

    def __init__(self, items: Iterable[T] = (), next_cursor: str | None = None) -> None:
        super().__init__(items)
        self.next_cursor = next_cursor

    def __repr__(self) -> str:
        return f"Page({list.__repr__(self)}, next_cursor={self.next_cursor!r})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        """``{"items": [...], "next_cursor": str | None}``, both keys always present."""
        args = get_args(source)
        item = handler.generate_schema(args[0]) if args else core_schema.any_schema()
        shape = core_schema.typed_dict_schema(
            {
                "items": core_schema.typed_dict_field(core_schema.list_schema(item)),
                "next_cursor": core_schema.typed_dict_field(
                    core_schema.nullable_schema(core_schema.str_schema())
                ),
            }
        )

        def as_shape(value: Any) -> Any:
            if isinstance(value, Page):
                return {"items": list(value), "next_cursor": value.next_cursor}
            return value

        def as_page(value: dict[str, Any]) -> Page[Any]:
            return cls(value["items"], value["next_cursor"])

        def serialize(page: Page[Any], inner: core_schema.SerializerFunctionWrapHandler) -> Any:
            return inner({"items": list(page), "next_cursor": page.next_cursor})

        return core_schema.no_info_before_validator_function(
            as_shape,
            core_schema.no_info_after_validator_function(as_page, shape),
            serialization=core_schema.wrap_serializer_function_ser_schema(serialize, schema=shape),
        )


@dataclass(frozen=True, slots=True)
class SessionListing(Generic[ModelT]):
    """One session of a listing: its id and its typed metadata (unpacks as a pair)."""

    session_id: str
    metadata: ModelT

    def __iter__(self) -> Iterator[Any]:
        return iter((self.session_id, self.metadata))
