"""Checks of request fields that are not catalog lookups; each names the offending field."""

from __future__ import annotations

from functools import cache

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from entitlements.errors import InvalidArgument

MAX_ID_LENGTH = 256
#: The longest text any string field of a request may hold; fields with a tighter rule (ids,
#: names, reasons) keep theirs. Above the longest legitimate value (a SIWE message, a hex EIP-1271
#: signature of 2 KB), far below the message size limit.
MAX_TEXT_LENGTH = 8192


def require_id(value: str, field: str) -> str:
    """An opaque identifier: non-empty, at most 256 characters, no control characters."""
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_ID_LENGTH} characters")
    if not value.isprintable() or value.strip() != value:
        raise InvalidArgument(
            field, "must not contain control characters or leading/trailing white space"
        )
    return value


def require_min_revision(value: int, field: str) -> int:
    """A consistency token: 0 (none) or a revision an earlier answer or write returned."""
    if value < 0:
        raise InvalidArgument(field, f"must be 0 or a revision the service returned, got {value}")
    return value


def require_count(values: object, field: str, *, maximum: int) -> None:
    n = len(values)  # type: ignore[arg-type]
    if n > maximum:
        raise InvalidArgument(field, f"at most {maximum} items, got {n}")


#: The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799


def require_timestamp(value: Timestamp, field: str) -> Timestamp:
    """A Timestamp inside the range protobuf defines (and so convertible), or INVALID_ARGUMENT."""
    if not MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(field, "seconds outside 0001-01-01 to 9999-12-31")
    if not 0 <= value.nanos <= 999_999_999:
        raise InvalidArgument(field, "nanos must be from 0 to 999,999,999")
    return value


_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def text_violation(message: Message) -> InvalidArgument | None:
    """The first string anywhere in `message` (nested messages, lists and map keys and values
    included) that no store can hold, as INVALID_ARGUMENT naming it ("events[3].idempotency_key").

    One rule for every text field on both databases: no NUL character (PostgreSQL text cannot
    hold one; SQLite would keep it, so the answer would depend on the database) and at most
    MAX_TEXT_LENGTH characters. Malformed UTF-8 never gets here: protobuf refuses it when it
    decodes the request (so no lone surrogate can either). The fields are read from the
    message's descriptor, so a field added to the API cannot escape the rule.
    """
    return _walk(message, "")


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL (U+0000) characters"
    if len(value) > MAX_TEXT_LENGTH:
        return f"must be at most {MAX_TEXT_LENGTH:,} characters, got {len(value):,}"
    return None


#: Where a bad string was found: the path's parts, innermost first, and what is wrong.
_Found = tuple[list[str], str]


@cache
def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and bool(entry.GetOptions().map_entry)


def _walk(message: Message, prefix: str) -> InvalidArgument | None:
    found = _find(message)
    if found is None:
        return None
    parts, problem = found
    return InvalidArgument(prefix + "".join(reversed(parts)).removeprefix("."), problem)


def _find(message: Message) -> _Found | None:
    # The path is only built on the way out of a find: a clean request costs no strings.
    for field, value in message.ListFields():
        kind = field.type
        if kind == _STRING:
            if field.is_repeated:
                for i, item in enumerate(value):
                    problem = _text_problem(item)
                    if problem is not None:
                        return [f"[{i}]", f".{field.name}"], problem
            else:
                problem = _text_problem(value)
                if problem is not None:
                    return [f".{field.name}"], problem
        elif kind == _MESSAGE:
            if _is_map(field):
                for key in value:
                    found = _map_entry(key, value[key])
                    if found is not None:
                        found[0].append(f".{field.name}")
                        return found
            elif field.is_repeated:
                for i, item in enumerate(value):
                    found = _find(item)
                    if found is not None:
                        found[0].extend((f"[{i}]", f".{field.name}"))
                        return found
            else:
                found = _find(value)
                if found is not None:
                    found[0].append(f".{field.name}")
                    return found
    return None


def _map_entry(key: object, item: object) -> _Found | None:
    if isinstance(key, str):
        problem = _text_problem(key)
        if problem is not None:
            return [], f"keys {problem}"
    if isinstance(item, str):
        problem = _text_problem(item)
        if problem is not None:
            return [f"[{key!r}]"], problem
    elif isinstance(item, Message):
        found = _find(item)
        if found is not None:
            found[0].append(f"[{key!r}]")
            return found
    return None
