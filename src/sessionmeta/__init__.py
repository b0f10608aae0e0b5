"""Typed, validated metadata for AI-agent sessions, stored beside the Agents SDK's tables."""

from ._atomic import Versioned
from ._check import CheckReport, InvalidValue, KeyStats, check_store
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
    "CheckReport",
    "ConflictError",
    "DatabaseError",
    "HasSessionId",
    "InvalidSessionIdError",
    "InvalidValue",
    "KeyStats",
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
    "Versioned",
    "__version__",
    "check_store",
]
