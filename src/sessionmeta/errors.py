"""The exceptions raised by sessionmeta, all rooted at :class:`SessionMetaError`.

Invalid values on write are reported as :class:`pydantic.ValidationError`, the
error every Pydantic user already handles; everything else is one of these.
"""

from __future__ import annotations

__all__ = [
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
]


class SessionMetaError(Exception):
    """Base class of every error raised by sessionmeta.

    ``session_id`` and ``key`` name the one session and key concerned, where there
    is one (``None`` otherwise): what a web framework's error handler shows.
    """

    session_id: str | None = None
    key: str | None = None


class ModelDefinitionError(SessionMetaError, TypeError):
    """A metadata model cannot be stored: a field lacks a default or its key is too long."""


class TableNameError(SessionMetaError, ValueError):
    """A table name is not a plain SQL identifier."""


class UnsupportedDialectError(SessionMetaError):
    """The engine's database or driver is not one sessionmeta supports."""


class InvalidArgumentError(SessionMetaError, ValueError, TypeError):
    """An argument of a call is out of range or of the wrong type: a limit, a batch size,
    an option. A ``ValueError`` and a ``TypeError`` too, as Python's own checks are."""


class InvalidSessionIdError(InvalidArgumentError):
    """A session id is empty, too long, or holds a character the databases cannot store."""


class UnknownKeyError(SessionMetaError, KeyError):
    """A key is not declared by the metadata model."""

    def __init__(self, keys: list[str], model_name: str, session_id: str | None = None) -> None:
        self.keys = keys
        self.model_name = model_name
        self.session_id = session_id
        self.key = keys[0] if len(keys) == 1 else None
        where = f" (session {session_id!r})" if session_id is not None else ""
        names = ", ".join(repr(key) for key in keys)
        super().__init__(f"{model_name} declares no key {names}{where}")

    def __str__(self) -> str:
        # KeyError would print the repr of the message; show it plainly.
        return str(self.args[0])


class StoredValueError(SessionMetaError, ValueError):
    """A stored value no longer validates against the model."""

    def __init__(self, session_id: str, key: str, stored_text: str, reason: str) -> None:
        self.session_id = session_id
        self.key = key
        self.stored_text = stored_text
        self.reason = reason
        shown = stored_text if len(stored_text) <= 200 else stored_text[:200] + "..."
        super().__init__(
            f"session {session_id!r}, key {key!r}: stored value {shown!r} "
            f"does not fit the model: {reason}"
        )


class DecryptionError(StoredValueError):
    """A stored value of an encrypted field cannot be decrypted: its key id is not among the
    store's keys, the key is wrong, the ciphertext was altered or moved from another
    session or key, or the value was stored before the field was declared encrypted."""

    def __init__(self, session_id: str, key: str, key_id: str | None, reason: str) -> None:
        self.session_id = session_id
        self.key = key
        self.key_id = key_id
        self.reason = reason
        # Never the plaintext (there is none to show) nor the key.
        self.stored_text = ""
        by = f" (key id {key_id!r})" if key_id is not None else ""
        ValueError.__init__(
            self,
            f"session {session_id!r}, key {key!r}: cannot decrypt the stored value{by}: {reason}",
        )


class FilterError(SessionMetaError, ValueError):
    """A query asks what its field cannot answer: an unknown operator, a range on a list."""


class InvalidCursorError(SessionMetaError, ValueError):
    """A page cursor is malformed, or was made by a query with another order."""


class SessionNotInScopeError(SessionMetaError, PermissionError):
    """A scoped store was asked for a session that belongs to another scope."""

    def __init__(
        self, message: str, *, session_id: str | None = None, key: str | None = None
    ) -> None:
        self.session_id = session_id
        self.key = key
        super().__init__(message)


class SessionNotFoundError(SessionMetaError, LookupError):
    """A write with ``create=False`` found no session to write to: the session does not
    exist, or (through a scoped view) holds no metadata of the scope."""

    def __init__(self, message: str, *, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(message)


class ConflictError(SessionMetaError):
    """A write conflicts with what is stored: the session changed between the read that
    produced a version and the write that expected it, or (:class:`UniqueValueError`)
    another session holds a unique value."""

    def __init__(self, message: str, *, session_id: str | None = None) -> None:
        self.session_id = session_id
        super().__init__(message)


class UniqueValueError(ConflictError):
    """A write would give a unique field's value to a second session (see ``Unique``).

    ``key`` and ``value`` are the field and the value refused, ``session_id`` the
    session written, ``holder`` the session that holds the value (``None`` when
    it could not be read: inside a caller's transaction, which must roll back).
    Nothing of the call was written.
    """

    def __init__(
        self,
        key: str,
        value: object,
        *,
        session_id: str | None,
        holder: str | None,
        scope: str | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.holder = holder
        within = f" among sessions with {scope}" if scope else ""
        held = f"session {holder!r}" if holder is not None else "another session"
        shown = repr(value)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        writing = f"session {session_id!r}: " if session_id is not None else ""
        super().__init__(
            f"{writing}{key!r} = {shown} is unique{within} and {held} holds it; "
            "nothing was written",
            session_id=session_id,
        )


class DatabaseError(SessionMetaError):
    """The database refused or failed an operation; the driver's error is the ``__cause__``."""

    def __init__(self, message: str, *, session_id: str | None = None) -> None:
        self.session_id = session_id
        super().__init__(message)


class ConcurrencyError(DatabaseError):
    """The database aborted an operation only because of a concurrent one (a deadlock, a
    busy file, a cluster's certification conflict), and every retry of the store's
    retry policy met the same: the operation changed nothing."""
