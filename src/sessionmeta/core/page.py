"""What queries return: a page of results that knows where the next page starts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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


@dataclass(frozen=True, slots=True)
class SessionListing(Generic[ModelT]):
    """One session of a listing: its id and its typed metadata (unpacks as a pair)."""

    session_id: str
    metadata: ModelT

    def __iter__(self) -> Iterator[Any]:
        return iter((self.session_id, self.metadata))
