"""Declaring a metadata model and inspecting it: no database, no I/O."""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetPydanticSchema, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import CoreSchema

from sessionmeta.core.encryption import Encrypted
from sessionmeta.core.fieldtypes import FieldKind, field_kind
from sessionmeta.core.instants import second_offsets_schema
from sessionmeta.core.limits import MAX_KEY_LENGTH, MAX_SESSION_ID_LENGTH
from sessionmeta.core.unique import UniqueKey, unique_keys
from sessionmeta.errors import (
    InvalidArgumentError,
    InvalidSessionIdError,
    ModelDefinitionError,
    UnknownKeyError,
)

if TYPE_CHECKING:
    from sessionmeta.core.encryption import EncryptionKeys

__all__ = [
    "FieldSpec",
    "HasSessionId",
    "ModelSpec",
    "ModelT",
    "SessionMeta",
    "UntypedMeta",
    "check_session_id",
]


class SessionMeta(BaseModel):
    """Base class of metadata models: each field is one stored key.

    Declare every field with a default, preferably ``X | None = None``, so a
    session that lacks the key can still be read.
    """

    model_config = ConfigDict(
        # Unknown keys are mistakes, not data to drop silently.
        extra="forbid",
        validate_assignment=True,
        validate_by_name=True,
        validate_by_alias=True,
        # NaN and infinities cannot be compared, indexed or kept in JSON: refuse them.
        allow_inf_nan=False,
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        # Offsets with seconds (+00:19:32) are written and read whole.
        return second_offsets_schema(source, handler)


class UntypedMeta(SessionMeta):
    """Metadata without a model: any key, any JSON value, read back as JSON reads it.

    For code written against a plain ``dict`` API; a value JSON would change (a
    tuple, a set, a datetime) is refused, so ``"42"`` stays a string and ``1.0`` a float.
    """

    model_config = ConfigDict(extra="allow")


ModelT = TypeVar("ModelT", bound=SessionMeta)


@dataclass(frozen=True)
class FieldSpec:
    """How one model field is stored."""

    name: str
    key: str
    # Reads each value back before it is written (``codec.encode_value``).
    adapter: TypeAdapter[Any]
    # What queries may do with the field: ranges, ordering, ``contains``.
    kind: FieldKind = "other"
    # Declared ``Encrypted()``: stored as ciphertext, found by equality only.
    encrypted: bool = False


def _field_adapter(info: FieldInfo) -> TypeAdapter[Any]:
    annotation: Any = info.annotation
    if info.metadata:
        # Field constraints (max_length, ge, ...) live in the metadata, not the annotation.
        annotation = typing.Annotated.__class_getitem__((annotation, *info.metadata))  # type: ignore[attr-defined]
    # Read back as the model reads it: offsets with seconds included.
    annotation = typing.Annotated[annotation, GetPydanticSchema(second_offsets_schema)]
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
        return TypeAdapter(annotation)
    return TypeAdapter(annotation, config=SessionMeta.model_config)


class ModelSpec(Generic[ModelT]):
    """A metadata model checked for storage, with its fields indexed by key and name."""

    def __init__(self, model: type[ModelT], *, keys: EncryptionKeys | None = None) -> None:
        if not (isinstance(model, type) and issubclass(model, SessionMeta)):
            raise ModelDefinitionError(f"{model!r} is not a subclass of sessionmeta.SessionMeta")
        if not model.__pydantic_complete__:
            # Annotations not resolvable when the class was made (defined in an exec'd
            # namespace, or naming a later class): resolved now, so that the fields'
            # metadata, Unique() included, is read.
            model.model_rebuild(raise_errors=False)
        self.model = model
        self.name = model.__name__
        # An open model (extra="allow") takes any key besides its fields, as plain JSON.
        self.open = model.model_config.get("extra") == "allow"
        # The keys of the encrypted fields (the store's); None where nothing is encrypted
        # here, or where the caller only inspects the model.
        self.keys = keys
        self.fields: dict[str, FieldSpec] = {}
        self._by_any_name: dict[str, FieldSpec] = {}
        field_metadata: dict[str, list[Any]] = {}
        for name, info in model.model_fields.items():
            # An empty alias is still an alias: refused below, never silently the name.
            key = info.alias if info.alias is not None else name
            if info.is_required():
                raise ModelDefinitionError(
                    f"{self.name}.{name} has no default: a session without the key "
                    f"{key!r} could not be read; declare it as `{name}: T | None = None`"
                )
            problem = _key_problem(key)
            if problem is not None:
                raise ModelDefinitionError(f"{self.name}.{name}: {problem}")
            for kind, other in (
                ("serialization_alias", info.serialization_alias),
                ("validation_alias", info.validation_alias),
            ):
                if other is not None and other != key:
                    raise ModelDefinitionError(
                        f"{self.name}.{name}: {kind} {other!r} differs from the storage key "
                        f"{key!r}; values are written and read under one key: use `alias`"
                    )
            encrypted = any(isinstance(item, Encrypted) for item in info.metadata)
            spec = FieldSpec(
                name=name,
                key=key,
                adapter=_field_adapter(info),
                # An encrypted value has no sort key and no item rows: equality only.
                kind="other" if encrypted else field_kind(info.annotation),
                encrypted=encrypted,
            )
            self.fields[key] = spec
            self._by_any_name[key] = spec
            self._by_any_name.setdefault(name, spec)
            field_metadata[key] = list(info.metadata)
        # Fields declared Unique(), by storage key.
        self.unique: dict[str, UniqueKey] = unique_keys(self.name, self.fields, field_metadata)
        # The storage keys of the fields declared ``Encrypted()`` (read on every write).
        self.encrypted: list[str] = [key for key, found in self.fields.items() if found.encrypted]

    def require_keys(self, field: FieldSpec) -> EncryptionKeys:
        """The keys that encrypt ``field``; refused when none were given."""
        if self.keys is None:
            raise InvalidArgumentError(
                f"{self.name}.{field.name} is Encrypted(): pass "
                "keys=EncryptionKeys(...) to the store (--keys-file or $SESSIONMETA_KEYS "
                "on the command line)"
            )
        return self.keys

    def knows(self, key: str) -> bool:
        """Whether a stored ``key`` belongs to the model (every key does, in an open one)."""
        return self.open or key in self.fields

    def field(self, key_or_name: str, *, session_id: str | None = None) -> FieldSpec:
        """The field stored under ``key_or_name``, or named so in Python.

        In an open model (``extra="allow"``) any other valid key is a field of JSON.
        """
        found = self._by_any_name.get(key_or_name) if isinstance(key_or_name, str) else None
        if found is not None:
            return found
        if not (self.open and isinstance(key_or_name, str)):
            raise UnknownKeyError([str(key_or_name)], self.name, session_id)
        problem = _key_problem(key_or_name)
        if problem is not None:
            raise InvalidArgumentError(f"{where(session_id)}{problem}")
        return FieldSpec(name=key_or_name, key=key_or_name, adapter=_JSON_ADAPTER)

    def value_of(self, model: BaseModel, field: FieldSpec) -> Any:
        """The value of ``field`` in ``model``: a declared field, or a key of an open model."""
        extra = model.model_extra
        if extra is not None and field.name in extra:
            return extra[field.name]
        return getattr(model, field.name)

    def resolve_keys(
        self, keys: Iterable[str] | None, *, session_id: str | None = None
    ) -> list[str] | None:
        """Storage keys for names or keys given by the caller; ``None`` stays "all keys"."""
        if keys is None:
            return None
        if isinstance(keys, str):
            keys = [keys]
        resolved: list[str] = []
        unknown: list[str] = []
        for key in keys:
            spec = self._by_any_name.get(key) if isinstance(key, str) else None
            if spec is None and self.open and isinstance(key, str):
                spec = self.field(key, session_id=session_id)
            if spec is None:
                unknown.append(str(key))
            elif spec.key not in resolved:
                resolved.append(spec.key)
        if unknown:
            raise UnknownKeyError(unknown, self.name, session_id)
        return resolved

    def validate_values(
        self, values: ModelT | Mapping[str, Any], *, session_id: str | None = None
    ) -> ModelT:
        """Validate what a caller wants written; the result's set fields are what to write."""
        if isinstance(values, BaseModel):
            if not isinstance(values, self.model):
                raise InvalidArgumentError(
                    f"{where(session_id)}expected a {self.name} or a mapping, "
                    f"got {type(values).__name__}"
                )
            given = {name: getattr(values, name) for name in values.model_fields_set}
        elif isinstance(values, Mapping):
            given = dict(values)
            unknown = [str(key) for key in given if key not in self._by_any_name]
            if unknown and self.open:
                for key in given:
                    self.field(key, session_id=session_id)  # refuses a key no database keeps
            elif unknown:
                raise UnknownKeyError(unknown, self.name, session_id)
        else:
            raise InvalidArgumentError(
                f"{where(session_id)}expected a {self.name} or a mapping of keys to values, "
                f"got {values!r} ({type(values).__name__})"
            )
        return self.model.model_validate(given)


# The field of a key an open model does not declare: any JSON value, read as JSON reads.
_JSON_ADAPTER: TypeAdapter[Any] = TypeAdapter(Any)


def _key_problem(key: str) -> str | None:
    """Why no supported database can keep ``key`` as a key, or ``None``."""
    if not key or len(key) > MAX_KEY_LENGTH:
        return (
            f"key {key[:40]!r} is {len(key)} characters long; keys must be 1 to "
            f"{MAX_KEY_LENGTH} characters"
        )
    if "\x00" in key:
        return f"key {key!r} holds a NUL character"
    if key.endswith(" "):
        return (
            f"key {key!r} ends with a space, which MySQL and MariaDB ignore when comparing: "
            f"it would share a row with {key.rstrip(' ')!r}"
        )
    return None


def where(session_id: str | None) -> str:
    """``"session 'x': "`` for messages about one session, else nothing."""
    return f"session {session_id!r}: " if session_id is not None else ""


class HasSessionId(Protocol):
    """Anything with a ``session_id``, such as an Agents SDK ``Session``."""

    @property
    def session_id(self) -> str: ...


def check_session_id(session: str | HasSessionId) -> str:
    """The session id of ``session``, if every supported database can store it."""
    session_id = session if isinstance(session, str) else getattr(session, "session_id", None)
    if not isinstance(session_id, str):
        raise InvalidSessionIdError(
            f"expected a session id string or an object with a session_id attribute, "
            f"got {session!r} ({type(session).__name__})"
        )
    if not session_id:
        raise InvalidSessionIdError("session id is empty")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise InvalidSessionIdError(
            f"session id {session_id[:40]!r}... is {len(session_id)} characters long; "
            f"at most {MAX_SESSION_ID_LENGTH} fit every supported database"
        )
    if "\x00" in session_id:
        raise InvalidSessionIdError(f"session id {session_id!r} holds a NUL character")
    if session_id.endswith(" "):
        raise InvalidSessionIdError(
            f"session id {session_id!r} ends with a space, which MySQL and MariaDB ignore "
            f"when comparing: it would be the same session as {session_id.rstrip(' ')!r}"
        )
    try:
        session_id.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSessionIdError(
            f"session id {session_id!r} holds a lone surrogate, which is not valid text"
        ) from None
    return session_id
