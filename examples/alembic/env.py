"""Alembic environment: async engine, and sessionmeta's tables as the autogenerate target.

The database URL comes from ``-x url=...``, else ``sqlalchemy.url`` in the
config, else ``$SESSIONMETA_URL``.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from sessionmeta import MetadataStore, migrations
from sessionmeta.demo import SupportTicket

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

url = (
    context.get_x_argument(as_dictionary=True).get("url")
    or config.get_main_option("sqlalchemy.url")
    or os.environ["SESSIONMETA_URL"]
)
engine = create_async_engine(url)
# Your application's store; its model does not change the tables.
store = MetadataStore(SupportTicket, engine)
target_metadata = store.sql_metadata


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    # The database also holds the SDK's message table and maybe your own tables:
    # compare only the tables sessionmeta describes.
    if type_ == "table":
        return name in target_metadata.tables
    return True


def configure(target: MetaData, **kwargs: Any) -> None:
    context.configure(
        target_metadata=target,
        include_name=include_name,
        compare_type=True,
        **kwargs,
    )


def run_offline() -> None:
    configure(target_metadata, url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_sync_migrations(connection: Connection) -> None:
    # As the migration creates them on this database: on MySQL/MariaDB the foreign keys
    # take the existing sessions table's type and collation, so autogenerate proposes
    # no change to the SDK's table.
    configure(migrations.target_metadata(connection, target_metadata), connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    async with engine.connect() as connection:
        await connection.run_sync(run_sync_migrations)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    asyncio.run(run_online())
