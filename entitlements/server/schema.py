"""Refuse to serve on a schema other than the code's: replicas never migrate on their own."""

from __future__ import annotations

from entitlements.store.migrate import current_revision, head_revision

__all__ = ["SchemaNotCurrent", "check_schema"]


class SchemaNotCurrent(RuntimeError):
    """The database schema is not at the migrations' head."""


async def check_schema(url: str) -> None:
    """Raise SchemaNotCurrent unless the database at `url` is at the migrations' head."""
    current, head = await current_revision(url), head_revision()
    if current != head:
        raise SchemaNotCurrent(
            f"the database schema is at {current or 'nothing'}, the code needs {head}: "
            "run 'entitlements migrate' first"
        )
