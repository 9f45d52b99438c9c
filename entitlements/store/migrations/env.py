"""Alembic environment: runs the migrations on the async engine (see entitlements.store.migrate).

`entitlements.store.migrate` hands in an open connection through `config.attributes`; the alembic
command line (`alembic -x url=... upgrade head` with a config naming this folder) gets an engine
built from `sqlalchemy.url` or `-x url=...`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import pool
from sqlalchemy.engine import Connection

from entitlements.store.engine import create_engine, normalize_url
from entitlements.store.models import Base, UTCDateTime, exists_on

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    # Migrations must not import the application's types, which may change after they are
    # written: render our UTC timestamp as the plain column type it stores.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def configure_options(connection: Connection) -> dict[str, Any]:
    return {
        "connection": connection,
        "target_metadata": target_metadata,
        "render_item": render_item,
        # SQLite can alter little in place; batch mode recreates the table instead.
        "render_as_batch": connection.dialect.name == "sqlite",
        "compare_type": True,
        "include_object": exists_on(connection.dialect.name),
    }


def do_run_migrations(connection: Connection) -> None:
    context.configure(**configure_options(connection))
    with context.begin_transaction():
        context.run_migrations()


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("no database URL: pass -x url=... or set sqlalchemy.url")
    return normalize_url(url)


async def run_async_migrations() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        render_item=render_item,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
elif (given := config.attributes.get("connection")) is not None:
    do_run_migrations(given)
else:
    asyncio.run(run_async_migrations())
