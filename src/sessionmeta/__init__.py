"""Typed, validated metadata for AI-agent sessions, stored beside the Agents SDK's tables."""

from ._filters import (
    AllOf,
    AnyOf,
    Condition,
    Filter,
    FilterArg,
    Operator,
    OrderArg,
    OrderBy,
    all_of,
    any_of,
    field,
)
from ._model import HasSessionId, SessionMeta
from ._page import Page, SessionListing
from ._scoped import ScopedBoundMetadata, ScopedStore
from ._store import BoundMetadata, MetadataStore, OnInvalid
from .errors import (
    ConflictError,
    DatabaseError,
    FilterError,
    InvalidCursorError,
    InvalidSessionIdError,
    ModelDefinitionError,
    SessionMetaError,
    SessionNotInScopeError,
    StoredValueError,
    TableNameError,
    UnknownKeyError,
    UnsupportedDialectError,
)

__version__ = "0.1.0"

__all__ = [
    "AllOf",
    "AnyOf",
    "BoundMetadata",
    "Condition",
    "ConflictError",
    "DatabaseError",
    "Filter",
    "FilterArg",
    "FilterError",
    "HasSessionId",
    "InvalidCursorError",
    "InvalidSessionIdError",
    "MetadataStore",
    "ModelDefinitionError",
    "OnInvalid",
    "Operator",
    "OrderArg",
    "OrderBy",
    "Page",
    "ScopedBoundMetadata",
    "ScopedStore",
    "SessionListing",
    "SessionMeta",
    "SessionMetaError",
    "SessionNotInScopeError",
    "StoredValueError",
    "TableNameError",
    "UnknownKeyError",
    "UnsupportedDialectError",
    "__version__",
    "all_of",
    "any_of",
    "field",
]
