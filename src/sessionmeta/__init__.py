"""Typed, validated metadata for AI-agent sessions, stored beside the Agents SDK's tables.

The public names are imported on first use, so that ``import sessionmeta`` (and the
``sessionmeta`` command, whose ``--help`` and ``ddl`` need neither Pydantic nor
SQLAlchemy's asyncio layer) starts quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sessionmeta.core.encryption import Encrypted, EncryptionKeys
    from sessionmeta.core.expiry import Expires
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
    from sessionmeta.core.unique import Unique
    from sessionmeta.core.versions import Versioned
    from sessionmeta.errors import (
        ConcurrencyError,
        ConflictError,
        DatabaseError,
        DecryptionError,
        FilterError,
        InvalidArgumentError,
        InvalidCursorError,
        InvalidSessionIdError,
        ModelDefinitionError,
        SessionMetaError,
        SessionNotFoundError,
        SessionNotInScopeError,
        StoredValueError,
        TableNameError,
        UniqueValueError,
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
    from sessionmeta.io.rekey import RekeyReport, UnreadableValue
    from sessionmeta.io.retry import RetryPolicy
    from sessionmeta.io.scoped import ScopedBoundMetadata, ScopedStore
    from sessionmeta.io.store import MetadataStore
    from sessionmeta.io.sweep import SweepResult

__version__ = "0.1.0"

# Each public name and the module that defines it (the imports above, for type checkers).
_MODULES = {
    "sessionmeta.core.expiry": ("Expires",),
    "sessionmeta.core.filters": (
        "AllOf",
        "AnyOf",
        "Condition",
        "Filter",
        "FilterArg",
        "Operator",
        "OrderArg",
        "OrderBy",
        "all_of",
        "any_of",
        "field",
    ),
    "sessionmeta.core.encryption": ("Encrypted", "EncryptionKeys"),
    "sessionmeta.core.page": ("Page", "SessionListing"),
    "sessionmeta.core.spec": ("HasSessionId", "SessionMeta", "UntypedMeta"),
    "sessionmeta.core.unique": ("Unique",),
    "sessionmeta.core.versions": ("Versioned",),
    "sessionmeta.errors": (
        "ConcurrencyError",
        "ConflictError",
        "DatabaseError",
        "DecryptionError",
        "FilterError",
        "InvalidArgumentError",
        "InvalidCursorError",
        "InvalidSessionIdError",
        "ModelDefinitionError",
        "SessionMetaError",
        "SessionNotFoundError",
        "SessionNotInScopeError",
        "StoredValueError",
        "TableNameError",
        "UniqueValueError",
        "UnknownKeyError",
        "UnsupportedDialectError",
    ),
    "sessionmeta.io.bound": ("BoundMetadata",),
    "sessionmeta.io.check": (
        "CheckReport",
        "InvalidValue",
        "KeyStats",
        "StaleHash",
        "check_store",
        "rehash_store",
    ),
    "sessionmeta.io.operations": ("OnInvalid",),
    "sessionmeta.io.rekey": ("RekeyReport", "UnreadableValue"),
    "sessionmeta.io.retry": ("RetryPolicy",),
    "sessionmeta.io.scoped": ("ScopedBoundMetadata", "ScopedStore"),
    "sessionmeta.io.store": ("MetadataStore",),
    "sessionmeta.io.sweep": ("SweepResult",),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


# Hidden from type checkers, which see the imports above instead: a visible module
# __getattr__ would make every misspelt name type-check as Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module 'sessionmeta' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        # Cached, so each name is looked up once.
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_WHERE})


__all__ = [
    "AllOf",
    "AnyOf",
    "BoundMetadata",
    "CheckReport",
    "ConcurrencyError",
    "Condition",
    "ConflictError",
    "DatabaseError",
    "DecryptionError",
    "Encrypted",
    "EncryptionKeys",
    "Expires",
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
    "RekeyReport",
    "RetryPolicy",
    "ScopedBoundMetadata",
    "ScopedStore",
    "SessionListing",
    "SessionMeta",
    "SessionMetaError",
    "UntypedMeta",
    "SessionNotFoundError",
    "SessionNotInScopeError",
    "StaleHash",
    "StoredValueError",
    "SweepResult",
    "TableNameError",
    "Unique",
    "UniqueValueError",
    "UnknownKeyError",
    "UnreadableValue",
    "UnsupportedDialectError",
    "Versioned",
    "__version__",
    "all_of",
    "any_of",
    "check_store",
    "field",
    "rehash_store",
]
