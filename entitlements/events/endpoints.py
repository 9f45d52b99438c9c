"""The endpoints file (`ENTITLEMENTS_EVENT_ENDPOINTS`): where events go, and signed with what."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from entitlements.events.signing import decode_secret
from entitlements.events.types import EVENT_TYPES

__all__ = ["Endpoint", "EndpointsError", "load_endpoints"]


class EndpointsError(ValueError):
    """The endpoints file is invalid; the message names the file and key."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A receiver: `name` identifies its deliveries (keep it stable), `event_types` empty means
    every type, `ordered` delivers one account's events one at a time, in order."""

    name: str
    url: str
    secret: str
    event_types: frozenset[str] = frozenset()
    ordered: bool = False
    timeout_s: float = 10.0

    @property
    def key(self) -> bytes:
        return decode_secret(self.secret)

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


_KEYS = {"name", "url", "secret", "event_types", "ordered", "timeout_seconds"}


def load_endpoints(path: Path) -> tuple[Endpoint, ...]:
    """Read ``[[endpoints]]`` tables with ``name``, ``url``, ``secret`` (``whsec_...``) and
    optionally ``event_types``, ``ordered`` and ``timeout_seconds``."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise EndpointsError(f"ENTITLEMENTS_EVENT_ENDPOINTS: cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise EndpointsError(f"ENTITLEMENTS_EVENT_ENDPOINTS: {path}: invalid TOML: {exc}") from exc
    entries = data.get("endpoints", [])
    if not isinstance(entries, list):
        raise EndpointsError(f"{path}: endpoints: expected [[endpoints]] tables")
    endpoints: list[Endpoint] = []
    for i, entry in enumerate(entries):
        where = f"{path}: endpoints[{i}]"
        if not isinstance(entry, dict):
            raise EndpointsError(f"{where}: expected a table")
        unknown = set(entry) - _KEYS
        if unknown:
            raise EndpointsError(f"{where}.{sorted(unknown)[0]}: unknown key")
        name, url, secret = entry.get("name"), entry.get("url"), entry.get("secret")
        if not isinstance(name, str) or not name:
            raise EndpointsError(f"{where}.name: a non-empty string is required")
        if any(e.name == name for e in endpoints):
            raise EndpointsError(f"{where}.name: endpoint {name!r} is defined twice")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise EndpointsError(f"{where}.url: an http(s) URL is required")
        if not isinstance(secret, str):
            raise EndpointsError(f"{where}.secret: a whsec_ secret is required")
        try:
            decode_secret(secret)
        except ValueError as exc:
            raise EndpointsError(f"{where}.secret: {exc}") from None
        types = entry.get("event_types", [])
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise EndpointsError(f"{where}.event_types: a list of event types is required")
        for t in types:
            if t not in EVENT_TYPES:
                raise EndpointsError(f"{where}.event_types: unknown event type {t!r}")
        ordered = entry.get("ordered", False)
        if not isinstance(ordered, bool):
            raise EndpointsError(f"{where}.ordered: true or false")
        timeout = entry.get("timeout_seconds", 10.0)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise EndpointsError(f"{where}.timeout_seconds: a positive number is required")
        endpoints.append(Endpoint(name, url, secret, frozenset(types), ordered, float(timeout)))
    return tuple(endpoints)
