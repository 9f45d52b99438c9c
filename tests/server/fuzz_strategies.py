"""Hypothesis strategies that build any request message of the published API from its
descriptor, with values chosen to reach validation edges: the catalog's real keys next to
garbage, integer boundaries, unknown enum values, huge lists, odd timestamps."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from typing import Any

from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from adapters.chains.config import NETWORKS
from entitlements.policies import default_catalog

__all__ = [
    "LARGE_LIST",
    "field_strings",
    "message_strategy",
    "strings",
    "strings_in",
    "undecodable",
    "vocabulary",
    "with_nul",
]

#: A repeated field is sometimes sent with this many items, past every per-request maximum.
LARGE_LIST = 1001
#: How deep nested messages are filled; deeper ones are left unset.
MAX_DEPTH = 3

_INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
_FIELD_MASK = field_mask_pb2.FieldMask.DESCRIPTOR.full_name
#: Timestamp's valid range is 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


@cache
def vocabulary() -> tuple[str, ...]:
    """Strings a real caller sends: the catalog's keys, networks, currencies, ids, addresses."""
    catalog = default_catalog()
    words: list[str] = [p.id for p in catalog.plans]
    words += list(catalog.features) + list(catalog.limits) + list(catalog.metrics)
    words += [*NETWORKS, "ETH", "USDC", "USDT", "eth", "dogecoin", "mainnet"]
    words += ["acct_1", "acct_2", "ws-42", "user_1", "chan_1", "role_1", "req_1", "pay_1"]
    words += ["sub_1", "cus_1", "evt_1", "key-1", "key-2"]
    words += ["2026-11", "2026-13", "1999-01", "9999-12", "0000-00", "2026-1", "2026-11-01"]
    words += ["0x" + "ab" * 20, "0x" + "AB" * 20, "0x" + "0" * 40, "0x" + "f" * 39, "0x" + "g" * 40]
    words += ["0x" + "12" * 32, "0x", "1", "0", "-1", "1.5", "1e18", "115792089237316195423570985"]
    words += ["https://example.com/ok", "javascript:alert(1)", "a@example.com", "not-an-email"]
    words += ["ERC20", "month", "year", "*", "%", "_", "'; DROP TABLE accounts; --", "null"]
    return tuple(words)


@cache
def strings(*, max_size: int = 300) -> st.SearchStrategy[str]:
    """Any string: real keys, empty, unicode, control characters, up to `max_size` long."""
    words = st.sampled_from(vocabulary())
    controls = st.text(
        st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), min_size=1
    )
    return st.one_of(
        words,
        st.just(""),
        st.text(max_size=20),
        st.builds(lambda w, c: w + c, words, controls),
        st.builds(lambda c, w: c + w, controls, words),
        # A NUL inside a real value: PostgreSQL text cannot hold it.
        st.builds(lambda w, i: w[:i] + "\x00" + w[i:], words, st.integers(0, 12)),
        st.builds(
            lambda w, n: (w * (n // max(len(w), 1) + 1))[:n], words, st.integers(0, max_size)
        ),
        st.text(min_size=max_size * 5 // 6, max_size=max_size),
    )


@cache
def _hints() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Valid-looking values by the end of a field's name, so that calls get past the first
    check often enough to reach the deeper ones."""
    catalog = default_catalog()
    accounts = ("acct_1", "acct_2", "ws-42", "free", "T-1000")
    addresses = ("0x" + "ab" * 20, "0x" + "00" * 19 + "01", "0xAbCdEf" + "0" * 34)
    return (
        ("account_id", accounts),
        ("account_ids", accounts),
        ("plan_id", tuple(p.id for p in catalog.plans)),
        ("feature", tuple(catalog.features)),
        ("features", tuple(catalog.features)),
        ("feature_id", tuple(catalog.features)),
        ("limit", tuple(catalog.limits)),
        ("key", (*catalog.limits, "key-1", "key-2", "evt-1")),
        ("metric", tuple(catalog.metrics)),
        ("network", tuple(NETWORKS)),
        ("currency", ("ETH", "USDC", "USDT")),
        ("address", addresses),
        ("addresses", addresses),
        ("period", ("2026-11", "2026-10", "2025-01")),
        ("email", ("a@example.com",)),
        ("url", ("https://example.com/back",)),
        ("balance", ("1", "0", "1000000000000000000")),
        ("token_ids", ("1", "42")),
        ("tx_hash", ("0x" + "12" * 32,)),
        ("_id", ("id_1", "chan_1", "user_1", "role_1", "req_1", "pay_1")),
        ("paths", ("name", "enabled", "min_balance", "network", "contract_address")),
    )


def field_strings(name: str) -> st.SearchStrategy[str]:
    """Strings for the field `name`: half of them plausible for it, half anything."""
    for suffix, values in _hints():
        if name.endswith(suffix):
            return either(st.sampled_from(values), strings(), first_in_ten=7)
    return strings()


def either(
    first: st.SearchStrategy[Any], second: st.SearchStrategy[Any], *, first_in_ten: int
) -> st.SearchStrategy[Any]:
    """`first` in `first_in_ten` draws out of ten, else `second` (`one_of` would flatten nested
    choices into one uniform pick, drowning a strategy among another's many branches)."""
    return st.integers(0, 9).flatmap(lambda n: first if n < first_in_ten else second)


def _integers(field: FieldDescriptor) -> st.SearchStrategy[int]:
    low, high = _INT_BOUNDS[field.type]
    edges = (low, low + 1, -1, 0, 1, 2, 3, 99, 100, 1000, high - 1, high)
    return st.one_of(
        st.sampled_from(sorted({e for e in edges if low <= e <= high})),
        st.integers(low, high),
        st.integers(max(low, -5), 10_000),
    )


def _enum(field: FieldDescriptor) -> st.SearchStrategy[int]:
    known = [v.number for v in field.enum_type.values]
    return st.one_of(
        st.sampled_from(known), st.sampled_from([-1, max(known) + 1, 2**31 - 1, -(2**31)])
    )


#: "Now" for the strategies, read once: a strategy built again within one test (they are built
#: lazily) must draw from the same ranges, or hypothesis refuses the test as flaky.
_NOW = int(time.time())


def _timestamps() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    """Now-ish, far past and future, and values outside Timestamp's range that still serialize."""
    now = _NOW
    seconds = st.one_of(
        st.integers(now - 3600, now + 3600),
        st.integers(now - 400 * 86_400, now + 400 * 86_400),
        st.sampled_from([0, -1, _MIN_SECONDS, _MAX_SECONDS, _MIN_SECONDS - 1, _MAX_SECONDS + 1]),
        st.sampled_from([-(2**63), 2**63 - 1, 2**40, -(2**40)]),
        st.integers(_MIN_SECONDS, _MAX_SECONDS),
    )
    nanos = st.one_of(
        st.just(0),
        st.integers(0, 999_999_999),
        st.sampled_from([-1, 1_000_000_000, -(2**31), 2**31 - 1]),
    )
    return st.builds(timestamp_pb2.Timestamp, seconds=seconds, nanos=nanos)


def _field_masks(target: Descriptor | None) -> st.SearchStrategy[field_mask_pb2.FieldMask]:
    names = [f.name for f in target.fields] if target is not None else []
    path = st.one_of(st.sampled_from(names or ["name"]), field_strings("paths"))
    return st.builds(field_mask_pb2.FieldMask, paths=st.lists(path, max_size=5))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return field_strings(field.name)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=300)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum(field)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    return _integers(field)


def _single(
    field: FieldDescriptor, depth: int, sibling: Descriptor | None
) -> st.SearchStrategy[Any]:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return _scalar(field)
    name = field.message_type.full_name
    if name == _TIMESTAMP:
        return _timestamps()
    if name == _FIELD_MASK:
        return _field_masks(sibling)
    return message_strategy(field.message_type, depth + 1)


def _repeated(item: st.SearchStrategy[Any], depth: int) -> st.SearchStrategy[list[Any]]:
    small = st.lists(item, max_size=5)
    if depth > 0:
        return small  # a huge list inside a huge list is a memory test, not a fuzz
    # Cheap to generate: one item repeated up to and past every per-request maximum.
    large = st.builds(lambda x, n: [x] * n, item, st.sampled_from([LARGE_LIST - 1, LARGE_LIST]))
    return either(large, small, first_in_ten=1)


def _set(message: Message, field: FieldDescriptor, value: Any) -> None:
    if field.is_repeated:
        target = getattr(message, field.name)
        if _is_map(field):
            for entry in value:
                key, item = entry.key, entry.value
                if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _assemble(cls: Callable[[], Message], descriptor: Descriptor) -> Callable[..., Message]:
    def build(values: dict[str, Any], chosen: dict[str, str | None]) -> Message:
        message = cls()
        for name, value in values.items():
            field = descriptor.fields_by_name[name]
            oneof = field.containing_oneof
            if oneof is not None and not _synthetic(oneof) and chosen.get(oneof.name) != name:
                continue
            if value is None:
                continue
            _set(message, field, value)
        return message

    return build


def _synthetic(oneof: Any) -> bool:
    """A proto3 `optional` field's hidden one-member oneof."""
    return len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any instance of `descriptor`'s message: every field present or absent, any value."""
    cls = GetMessageClass(descriptor)
    if depth > MAX_DEPTH:
        return st.builds(cls)
    # A FieldMask is paired with the message it masks (its sibling message field, if any).
    sibling = next(
        (
            f.message_type
            for f in descriptor.fields
            if f.type == FieldDescriptor.TYPE_MESSAGE
            and not f.is_repeated
            and f.message_type.full_name not in (_TIMESTAMP, _FIELD_MASK)
        ),
        None,
    )
    values: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        single = _single(field, depth, sibling)
        if field.is_repeated:
            values[field.name] = _repeated(single, depth)
        elif field.has_presence:
            # Messages, oneof members and `optional` scalars: sometimes absent.
            values[field.name] = either(single, st.none(), first_in_ten=8)
        else:
            values[field.name] = single  # absent is the default value, which `single` includes
    chosen: dict[str, st.SearchStrategy[str | None]] = {
        oneof.name: st.sampled_from([None, *(f.name for f in oneof.fields)])
        for oneof in descriptor.oneofs
        if not _synthetic(oneof)
    }
    return st.builds(
        _assemble(cls, descriptor), st.fixed_dictionaries(values), st.fixed_dictionaries(chosen)
    )


# --- requests no handler should see ------------------------------------------------------------


def undecodable(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Bytes sent as a request of `descriptor`: random ones, and real requests cut short or with
    one byte changed. Most are no message; those that decode are answered as any request."""
    real = message_strategy(descriptor).map(lambda m: m.SerializeToString())
    return st.one_of(
        st.binary(min_size=1, max_size=40),
        st.builds(_cut_short, real, st.integers(1, 30)),
        st.builds(_one_byte_changed, real, st.integers(0, 2**16), st.integers(0, 255)),
        st.sampled_from([b"\xff" * 7, b"\x0a\x02\xc3\x28", b"\x0a\x7f"]),
    )


def _cut_short(body: bytes, cut: int) -> bytes:
    # A length-delimited field that announces more bytes than follow, when there is no body.
    return body[:-cut] if len(body) > cut else body + b"\x0a\x7f"


def _one_byte_changed(body: bytes, where: int, value: int) -> bytes:
    if not body:
        return bytes([value])
    i = where % len(body)
    return body[:i] + bytes([value]) + body[i + 1 :]


@st.composite
def with_nul(draw: st.DrawFn, descriptor: Descriptor) -> Message:
    """Any request of `descriptor` with a NUL in one of its string fields (set or not, nested
    and repeated ones included); unchanged if it has no string field to put one in."""
    message = draw(message_strategy(descriptor))
    spots = _string_spots(message)
    if spots:
        put = draw(st.sampled_from(spots))
        put(draw(st.sampled_from(["\x00", "a\x00", "\x00b", "key-1\x00x", "acct_1\x00"])))
    return message


def _string_spots(message: Message) -> list[Callable[[str], None]]:
    """Setters, one per place in `message` a string can be put."""
    spots: list[Callable[[str], None]] = []
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                spots.append(value.append)
                for i in range(min(len(value), 3)):
                    spots.append(lambda text, items=value, i=i: items.__setitem__(i, text))
            else:
                spots.append(lambda text, m=message, name=field.name: setattr(m, name, text))
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field):
            if field.is_repeated:
                for item in list(value)[:3]:
                    spots += _string_spots(item)
            elif message.HasField(field.name):
                spots += _string_spots(value)
    return spots


def strings_in(message: Message) -> list[str]:
    """Every string value set anywhere in `message`."""
    found: list[str] = []
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            found += list(value) if field.is_repeated else [value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field):
            for item in value if field.is_repeated else [value]:
                found += strings_in(item)
    return found
