"""Parsing of numeric settings from the environment, shared by the settings modules."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["env_float"]


def env_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float,
    error: type[ValueError],
) -> float:
    """The number in `name`, `default` when unset or blank; `error` names the variable."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise error(f"{name}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise error(f"{name}: must be at least {minimum:g}, got {raw!r}")
    return value
