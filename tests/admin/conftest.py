"""The admin tests use the servicer tests' real servers (each database backend)."""

from __future__ import annotations

from tests.server.conftest import (  # noqa: F401 - fixtures
    channel,
    lone_channel,
    lone_server,
    server,
    settings,
    sqlite_store,
)
