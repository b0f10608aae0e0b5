"""Typed, validated metadata for AI-agent sessions, stored beside the Agents SDK's tables."""

from sessionmeta.core.filters import (
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
from sessionmeta.core.page import Page, SessionListing
from sessionmeta.core.spec import HasSessionId, SessionMeta, UntypedMeta
from sessionmeta.core.versions import Versioned
from sessionmeta.errors import (
    ConcurrencyError,
    ConflictError,
    DatabaseError,
    FilterError,
    InvalidArgumentError,
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
from sessionmeta.io.bound import BoundMetadata
from sessionmeta.io.check import (
    CheckReport,
    InvalidValue,
    KeyStats,
    StaleHash,
    check_store,
    rehash_store,
)
from sessionmeta.io.operations import OnInvalid
from sessionmeta.io.retry import RetryPolicy
from sessionmeta.io.scoped import ScopedBoundMetadata, ScopedStore
from sessionmeta.io.store import MetadataStore

__version__ = "0.1.0"

__all__ = [
    "AllOf",
    "AnyOf",
    "BoundMetadata",
    "CheckReport",
    "ConcurrencyError",
    "Condition",
    "ConflictError",
    "DatabaseError",
    "Filter",
    "FilterArg",
    "FilterError",
    "HasSessionId",
    "InvalidArgumentError",
    "InvalidCursorError",
    "InvalidSessionIdError",
    "InvalidValue",
    "KeyStats",
    "MetadataStore",
    "ModelDefinitionError",
    "OnInvalid",
    "Operator",
    "OrderArg",
    "OrderBy",
    "Page",
    "RetryPolicy",
    "ScopedBoundMetadata",
    "ScopedStore",
    "SessionListing",
    "SessionMeta",
    "SessionMetaError",
    "UntypedMeta",
    "SessionNotInScopeError",
    "StaleHash",
    "StoredValueError",
    "TableNameError",
    "UnknownKeyError",
    "UnsupportedDialectError",
    "Versioned",
    "__version__",
    "all_of",
    "any_of",
    "check_store",
    "field",
    "rehash_store",
]
