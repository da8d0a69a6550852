"""Postgres for Koverage: connections, pools, databases and schema migrations."""

from koverage.db._admin import create_database, drop_database
from koverage.db._connect import (
    connect,
    connect_async,
    create_pool,
    database_url,
    open_async_pool,
    pooled_connection,
)
from koverage.db._errors import (
    MigrationChecksumError,
    MigrationError,
    MigrationFailedError,
    MigrationFileError,
    MigrationHistoryError,
)
from koverage.db._migrations import (
    MIGRATIONS_TABLE,
    AppliedMigration,
    Migration,
    applied_migrations,
    load_migrations,
    migrate,
)

__all__ = [
    "MIGRATIONS_TABLE",
    "AppliedMigration",
    "Migration",
    "MigrationChecksumError",
    "MigrationError",
    "MigrationFailedError",
    "MigrationFileError",
    "MigrationHistoryError",
    "applied_migrations",
    "connect",
    "connect_async",
    "create_database",
    "create_pool",
    "database_url",
    "drop_database",
    "load_migrations",
    "migrate",
    "open_async_pool",
    "pooled_connection",
]
