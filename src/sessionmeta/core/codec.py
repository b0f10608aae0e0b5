"""Encoding field values to stored rows and decoding rows back: no database, no I/O.

A value is stored as its JSON text (``value``), beside two index columns:
``value_hash``, a fixed-width digest that serves equality whatever the value's
size, and ``sort_key``, an order-preserving ASCII or text rendering of scalar
values that serves ranges and ordering (numbers by magnitude, datetimes as UTC
instants).
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError, from_json, to_jsonable_python

from sessionmeta.core.limits import SORT_KEY_LENGTH
from sessionmeta.core.spec import FieldSpec, ModelSpec, ModelT
from sessionmeta.errors import StoredValueError

__all__ = [
    "EncodedValue",
    "decode_rows",
    "encode_model",
    "encode_value",
    "equality_form",
    "equality_hash",
    "field_hash",
    "item_hashes",
    "json_text",
    "object_text",
    "sort_key",
]

_EXPONENT_BIAS = 50_000
# Built once: json.dumps with options builds a new encoder on every call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class EncodedValue(NamedTuple):
    """One stored row's value columns.

    A named tuple, not a frozen dataclass: a bulk write builds one per value, and a
    frozen dataclass's ``__init__`` costs three times as much.
    """

    key: str
    value: str
    value_hash: str
    sort_key: str | None
    # For list and set fields: the hashes of the distinct elements, which serve
    # ``contains`` through the items table; ``None`` for other fields.
    items: tuple[str, ...] | None = None
    # Microseconds from the write until the row expires, on the database's clock;
    # ``None``: it never does (see ``sessionmeta.core.expiry``).
    ttl: int | None = None


def json_text(json_value: Any) -> str:
    """The canonical JSON text of a JSON-ready value: what is stored and hashed."""
    return _JSON.encode(json_value)


def item_hashes(collection: Any) -> tuple[str, ...]:
    """The hashes of the distinct elements of a validated list or set (none for ``None``)."""
    if not isinstance(collection, (list, tuple, set, frozenset)):
        return ()
    return tuple(sorted({equality_hash(element) for element in collection}))


def value_hash(text: str) -> str:
    """128 bits of SHA-256: equality through an index of fixed width, for values of any size."""
    return _digest(text.encode("utf-8"))


def equality_hash(value: Any) -> str:
    """The ``value_hash`` of a validated value: equal exactly when Python's ``==`` says so.

    See :func:`equality_form`; this is the one definition of equality that ``==``,
    ``!=``, ``in_``, ``contains`` and conditional versions' peers rely on.
    """
    return value_hash(equality_form(value))


def equality_form(value: Any) -> str:
    """A text that two values share exactly when they are equal as Python compares them.

    Numbers by numeric value (``1 == 1.0 == Decimal("1.00")``, ``-0.0 == 0.0``), aware
    datetimes by instant, dicts whatever their key order, sets whatever their order.
    Unlike Python, ``True`` and ``1`` differ (as they do in JSON and in a field typed
    ``bool | int``). Strings, ``None``, booleans, dates, UUIDs and lists of strings keep
    the form they had before this rule: their JSON text.
    """
    if value is None or isinstance(value, (bool, str)):
        return json_text(value)
    if isinstance(value, enum.Enum):
        return equality_form(value.value)
    if isinstance(value, (int, float, Decimal)):
        return _number_identity(value)
    if isinstance(value, dt.datetime) and value.utcoffset() is not None:
        # "@" never starts JSON text: an instant's form equals no other value's.
        return "@" + _datetime_sort_key(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(equality_form(item) for item in value) + "]"
    if isinstance(value, (set, frozenset)):
        return "[" + ",".join(sorted(equality_form(item) for item in value)) + "]"
    if isinstance(value, Mapping):
        pairs = sorted(
            f"{equality_form(name)}:{equality_form(item)}" for name, item in value.items()
        )
        return "{" + ",".join(pairs) + "}"
    if isinstance(value, BaseModel):
        return equality_form(dict(value))
    # Dates, naive datetimes, times, UUIDs, bytes: equal exactly when their JSON is.
    return json_text(to_jsonable_python(value, bytes_mode="base64"))


def _number_identity(number: float | Decimal) -> str:
    # "#" never starts JSON text, so a number's identity cannot equal a value's text.
    if type(number) is int:
        return _int_identity(number)
    if isinstance(number, Decimal):
        decimal = number
        if not decimal.is_finite():
            return f"#{decimal}"
    else:
        decimal = Decimal(number) if isinstance(number, int) else Decimal(repr(number))
    if decimal.is_zero():
        return "#0"
    sign, digits, _ = decimal.as_tuple()
    mantissa = "".join(map(str, digits)).rstrip("0")
    return f"#{'-' if sign else ''}{mantissa}e{decimal.adjusted()}"


def _int_identity(number: int) -> str:
    """:func:`_number_identity` of an int, without building a Decimal (the common case)."""
    if number == 0:
        return "#0"
    digits = str(abs(number))
    return f"#{'-' if number < 0 else ''}{digits.rstrip('0')}e{len(digits) - 1}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


_INVERT_DIGITS = str.maketrans("0123456789", "9876543210")


def _digits_sort_key(negative: bool, digits: str, adjusted: int) -> str:
    """An ASCII string whose byte order is the numeric order of ``±d.igits * 10**adjusted``."""
    text = digits.rstrip("0")
    exponent = adjusted + _EXPONENT_BIAS
    if not negative:
        return f"6{exponent:06d}{text}"[:SORT_KEY_LENGTH]
    # Negative numbers: invert everything so larger magnitudes sort first, and end
    # with "~" (above every digit) so that -1.2 sorts after -1.23.
    inverted = text.translate(_INVERT_DIGITS)
    return f"4{2 * _EXPONENT_BIAS - exponent:06d}{inverted}"[: SORT_KEY_LENGTH - 1] + "~"


def _number_sort_key(number: Decimal) -> str:
    """An ASCII string whose byte order is the numeric order of ``number``."""
    if number.is_zero():
        return "5"
    sign, digits, _ = number.as_tuple()
    return _digits_sort_key(bool(sign), "".join(map(str, digits)), number.adjusted())


def _int_sort_key(number: int) -> str:
    """:func:`_number_sort_key` of an int, without building a Decimal (the common case)."""
    if number == 0:
        return "5"
    digits = str(abs(number))
    return _digits_sort_key(number < 0, digits, len(digits) - 1)


def _datetime_sort_key(value: dt.datetime) -> str:
    offset = value.utcoffset()
    if offset is None:
        return value.isoformat(timespec="microseconds")
    naive = value.replace(tzinfo=None)
    try:
        return (naive - offset).isoformat(timespec="microseconds")
    except OverflowError:
        # The UTC instant is a few hours before year 1 or after year 9999, which
        # datetime cannot hold: spell that day so that the text still sorts in order.
        if offset > dt.timedelta(0):
            time = (naive + dt.timedelta(days=1) - offset).time()
            return f"0000-12-31T{time.isoformat(timespec='microseconds')}"
        time = (naive - dt.timedelta(days=1) - offset).time()
        return f"9999-12-32T{time.isoformat(timespec='microseconds')}"


def sort_key(value: Any) -> str | None:
    """The order-preserving key of a scalar value; ``None`` for values that have no order."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return _int_sort_key(value)
    if isinstance(value, float):
        # The shortest repr orders floats exactly and compares equal across int/float.
        return _number_sort_key(Decimal(repr(value)))
    if isinstance(value, Decimal):
        return _number_sort_key(value) if value.is_finite() else None
    if isinstance(value, dt.datetime):
        return _datetime_sort_key(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        # PostgreSQL text cannot hold NUL; the prefix only orders, it is never read back.
        return value[:SORT_KEY_LENGTH].replace("\x00", "\x01")
    return None


def _unstorable(key: str, value: Any, reason: str) -> InitErrorDetails:
    return {
        "type": PydanticCustomError(
            "unstorable_value", "Value cannot be stored: {reason}", {"reason": reason}
        ),
        "loc": (key,),
        "input": value,
    }


def encode_value(
    spec: ModelSpec[Any], key: str, python_value: Any, json_value: Any
) -> EncodedValue | InitErrorDetails:
    """Encode one validated value, or describe why it cannot be stored unchanged."""
    if isinstance(python_value, (set, frozenset)) and isinstance(json_value, list):
        # A set's iteration order varies between processes (string hashing is
        # salted): sort it, so equal sets store equal text and equal hashes.
        json_value = sorted(json_value, key=json_text)
    try:
        text = json_text(json_value)
        text.encode("utf-8")
    except ValueError as exc:
        # NaN or infinity inside a loosely typed value, or a lone surrogate in a string.
        return _unstorable(key, python_value, str(exc))
    field = spec.field(key)
    # Nothing is changed silently: every value is read back as a read would, and must
    # come back identical (type, value, digits, offset) before anything is written.
    try:
        # Reads parse the value inside an object ({"key": value}): one level deeper
        # than the value alone, which matters at the JSON parser's nesting limit.
        from_json(f"[{text}]")
        read_back = field.adapter.validate_json(text)
    except ValueError as exc:
        if not isinstance(exc, ValidationError):
            return _unstorable(key, python_value, f"it does not read back: {exc}")
        return _unstorable(key, python_value, f"it does not read back: {exc.errors()[0]['msg']}")
    changed = difference(read_back, python_value)
    if changed is not None:
        return _unstorable(key, python_value, changed)
    items = item_hashes(python_value) if field.kind == "collection" else None
    return EncodedValue(key, text, equality_hash(python_value), sort_key(python_value), items)


def _shown(value: Any) -> str:
    # An offset's seconds show in isoformat(), not in a datetime's repr.
    if isinstance(value, (dt.datetime, dt.time)):
        return value.isoformat()
    return repr(value)


def difference(read: Any, written: Any, where: str = "") -> str | None:
    """Where a value read back differs from the value written, or ``None`` when it is
    identical: of the same type, equal, and alike where ``==`` forgives (a float's sign
    of zero, a Decimal's digits, an aware datetime's offset), all the way down."""
    if type(read) is type(written):
        if isinstance(written, (list, tuple)) and len(read) == len(written):
            for index, (left, right) in enumerate(zip(read, written, strict=True)):
                found = difference(left, right, f"{where}[{index}]")
                if found is not None:
                    return found
            return None
        if isinstance(written, dict) and read.keys() == written.keys():
            for name, value in written.items():
                found = difference(read[name], value, f"{where}[{name!r}]")
                if found is not None:
                    return found
            return None
        if isinstance(written, BaseModel):
            return difference(dict(read), dict(written), where)
        if _alike(read, written):
            return None
    at = f"at {where}: " if where else ""
    return f"{at}it would read back as {_shown(read)}, not {_shown(written)}"


def _alike(read: Any, written: Any) -> bool:
    if isinstance(written, float):
        return repr(read) == repr(written)
    if isinstance(written, Decimal):
        return bool(read.as_tuple() == written.as_tuple())
    if isinstance(written, (dt.datetime, dt.time)):
        return bool(read == written) and read.utcoffset() == written.utcoffset()
    return bool(read == written)


def _to_json_values(validated: Any, names: set[str]) -> dict[str, Any]:
    values: dict[str, Any] = validated.__pydantic_serializer__.to_python(
        validated, mode="json", include=names, by_alias=True, round_trip=True
    )
    return values


def encode_model(spec: ModelSpec[ModelT], validated: ModelT) -> list[EncodedValue]:
    """The rows for the explicitly set fields of a validated model.

    Raises :class:`pydantic.ValidationError` naming every value that cannot be
    stored exactly, before anything is written.
    """
    names = validated.model_fields_set
    try:
        json_values = _to_json_values(validated, names)
    except ValueError:
        json_values = None
    encoded = None
    if json_values is not None:
        encoded = _encoded_at_once(spec, validated, names, json_values)
    if encoded is None:
        encoded = _encoded_one_by_one(spec, validated, names, json_values)
    if spec.encrypted:
        return [_blinded(spec, validated, row) for row in encoded]
    return encoded


def _blinded(spec: ModelSpec[ModelT], validated: ModelT, row: EncodedValue) -> EncodedValue:
    """An encrypted field's row as queries see it: the blind index for its hash, no sort key
    and no items. The text is still the plaintext: ``Operations`` encrypts it on writing,
    where the session id (part of the associated data) is known."""
    field = spec.field(row.key)
    if not field.encrypted:
        return row
    value_hash = field_hash(spec, field, spec.value_of(validated, field))
    return EncodedValue(row.key, row.value, value_hash, None, None)


def field_hash(spec: ModelSpec[Any], field: FieldSpec, value: Any) -> str:
    """The ``value_hash`` of ``value`` stored under ``field``: the equality hash, or for an
    encrypted field the blind index (HMAC under the store's index key)."""
    if field.encrypted:
        return spec.require_keys(field).blind_index(field.key, equality_form(value))
    return equality_hash(value)


# Types whose ``==`` is exact (no -0.0, no Decimal digits, no offsets): a value read
# back equal and of the same type is identical.
_EXACT_TYPES = (str, int, bool, type(None))


def _encoded_at_once(
    spec: ModelSpec[ModelT], validated: ModelT, names: set[str], json_values: dict[str, Any]
) -> list[EncodedValue] | None:
    """The rows, read back as one document as a read does; ``None`` when any value
    needs a closer look (:func:`_encoded_one_by_one` says which and why)."""
    extra = validated.__pydantic_extra__ or {}
    declared = validated.__dict__
    entries: list[tuple[FieldSpec, Any, str]] = []
    try:
        for name in names:
            field = spec.field(name)
            value = extra[name] if name in extra else declared[name]
            if isinstance(value, (set, frozenset)):
                return None
            text = json_text(json_values[field.key])
            text.encode("utf-8")
            entries.append((field, value, text))
        entries.sort(key=lambda entry: entry[0].key)
        read_back = spec.model.model_validate_json(
            object_text((field.key, text) for field, _, text in entries)
        )
    except (ValueError, KeyError):
        return None
    read_extra = read_back.__pydantic_extra__ or {}
    read_declared = read_back.__dict__
    encoded: list[EncodedValue] = []
    for field, value, text in entries:
        name = field.name
        read = read_extra[name] if name in read_extra else read_declared.get(name)
        if type(read) is not type(value):
            return None
        if isinstance(value, _EXACT_TYPES):
            if read != value:
                return None
        elif difference(read, value) is not None:
            return None
        encoded.append(_row(field, text, value))
    return encoded


def _row(field: FieldSpec, text: str, value: Any) -> EncodedValue:
    """The row of a value whose JSON text is ``text``: what :func:`equality_hash`,
    :func:`sort_key` and :func:`item_hashes` give, by the shortest path for common types."""
    kind = type(value)
    if field.kind == "collection":
        if kind is list and all(type(item) is str for item in value):
            # A list of strings' equality form is its JSON text.
            items = tuple(sorted({value_hash(json_text(item)) for item in value}))
            return EncodedValue(field.key, text, value_hash(text), None, items)
        items = item_hashes(value)
        return EncodedValue(field.key, text, equality_hash(value), sort_key(value), items)
    if kind is str:
        # A string's equality form is its JSON text (see equality_form).
        ordered = value[:SORT_KEY_LENGTH].replace("\x00", "\x01")
        return EncodedValue(field.key, text, value_hash(text), ordered)
    if kind is int:
        return EncodedValue(field.key, text, value_hash(_int_identity(value)), _int_sort_key(value))
    if kind is float:
        number = Decimal(repr(value))
        return EncodedValue(
            field.key, text, value_hash(_number_identity(number)), _number_sort_key(number)
        )
    if kind is dt.datetime and value.utcoffset() is not None:
        instant = _datetime_sort_key(value)
        return EncodedValue(field.key, text, value_hash("@" + instant), instant)
    if kind is bool or value is None:
        return EncodedValue(field.key, text, value_hash(text), sort_key(value))
    return EncodedValue(field.key, text, equality_hash(value), sort_key(value))


def _encoded_one_by_one(
    spec: ModelSpec[ModelT],
    validated: ModelT,
    names: set[str],
    json_values: dict[str, Any] | None,
) -> list[EncodedValue]:
    """The rows, each value read back alone, naming every value that cannot be stored."""
    encoded: list[EncodedValue] = []
    errors: list[InitErrorDetails] = []
    if json_values is None:
        # Too deeply nested to serialize: find which values, one at a time.
        json_values = {}
        for name in names:
            key = spec.field(name).key
            try:
                json_values.update(_to_json_values(validated, {name}))
            except ValueError as exc:
                errors.append(
                    _unstorable(key, spec.value_of(validated, spec.field(name)), str(exc))
                )
    for name in names:
        field = spec.field(name)
        if field.key not in json_values:
            continue
        result = encode_value(
            spec, field.key, spec.value_of(validated, field), json_values[field.key]
        )
        if isinstance(result, EncodedValue):
            encoded.append(result)
        else:
            errors.append(result)
    if errors:
        raise ValidationError.from_exception_data(spec.name, errors)
    encoded.sort(key=lambda row: row.key)
    return encoded


@functools.lru_cache(maxsize=4096)
def _quoted(key: str) -> str:
    # Stored keys are few and repeat on every read: quote each once.
    return json.dumps(key)


def object_text(rows: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{_quoted(key)}:{value}" for key, value in rows) + "}"


def decode_rows(
    spec: ModelSpec[ModelT],
    session_id: str,
    rows: Sequence[tuple[str, str]],
    *,
    on_invalid: str = "raise",
    invalid_keys: list[str] | None = None,
) -> ModelT:
    """Build the model from stored ``(key, value)`` rows; undeclared keys are ignored.

    The model's ``model_fields_set`` is exactly the stored keys. A value that no
    longer validates raises :class:`StoredValueError`, or with ``on_invalid="default"``
    is left out (so it reads as the field's default) and its key appended to
    ``invalid_keys``.
    """
    known = [(key, value) for key, value in rows if spec.knows(key)]
    try:
        # One JSON document, one validation: far cheaper than one call per key.
        return spec.model.model_validate_json(object_text(known))
    except ValidationError:
        pass
    kept: list[tuple[str, str]] = []
    for key, value in known:
        try:
            spec.model.model_validate_json(object_text([(key, value)]))
        except ValidationError as exc:
            if on_invalid != "default":
                reason = "; ".join(error["msg"] for error in exc.errors())
                raise StoredValueError(session_id, key, value, reason) from exc
            if invalid_keys is not None:
                invalid_keys.append(key)
        else:
            kept.append((key, value))
    # Each key validated alone; a model validator may still object to them together.
    return spec.model.model_validate_json(object_text(kept))
