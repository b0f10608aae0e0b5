"""Typed, validated metadata for AI-agent sessions, stored beside the Agents SDK's tables."""

from ._model import HasSessionId, SessionMeta
from ._store import BoundMetadata, MetadataStore, OnInvalid
from .errors import (
    ConflictError,
    DatabaseError,
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
    "BoundMetadata",
    "ConflictError",
    "DatabaseError",
    "HasSessionId",
    "InvalidSessionIdError",
    "MetadataStore",
    "ModelDefinitionError",
    "OnInvalid",
    "SessionMeta",
    "SessionMetaError",
    "SessionNotInScopeError",
    "StoredValueError",
    "TableNameError",
    "UnknownKeyError",
    "UnsupportedDialectError",
    "__version__",
]
