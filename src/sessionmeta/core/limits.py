"""Sizes the model side and the tables agree on.

Plain constants with no imports, so that building the tables (``sessionmeta ddl``)
does not import Pydantic.
"""

from __future__ import annotations

__all__ = ["MAX_KEY_LENGTH", "MAX_SESSION_ID_LENGTH", "SORT_KEY_LENGTH"]

# A storage key and a session id are at most this many characters on every database.
MAX_KEY_LENGTH = 255
MAX_SESSION_ID_LENGTH = 255
# The order-preserving rendering of a scalar value is cut to this many characters.
SORT_KEY_LENGTH = 200
