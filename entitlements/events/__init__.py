"""Outbound events: what happened to an account, written with the change (a transactional outbox)
and delivered afterwards to configured endpoints as Standard Webhooks."""

from __future__ import annotations

from entitlements.events.types import EVENT_TYPES, Event

__all__ = ["EVENT_TYPES", "Event"]
