"""Schema migrations: ordered SQL files per owning service, applied once each.

Each service that owns tables keeps its migrations in its own package, as
`NNNN_description.sql` (four or more digits, then lower-case words joined by
`_`), for example `services/chat/migrations/0001_conversations.sql`.
`migrate()` applies the files that the database has not seen yet, in version
order, and records each in `koverage_schema_migrations`:

    owner       text        the owning service, "chat"
    version     integer     NNNN from the file name
    name        text        the description from the file name
    checksum    text        SHA-256 of the file's bytes, hex
    applied_at  timestamptz when it was applied

Rules:

- One transaction per file: the file's SQL and its record commit together,
  or neither does.
- A transaction-level advisory lock serialises every migrating process on
  the database, so services starting side by side cannot apply a file twice
  or race on creating the record table.
- Re-running is a no-op. Adding `0003_...` to a database at `0002` applies
  only `0003`: an existing database is upgraded in place.
- An applied file must never change: a different checksum raises
  `MigrationChecksumError`. Fix a mistake with a new file.

Known limitation: because every file runs inside a transaction, statements
Postgres refuses there (`CREATE INDEX CONCURRENTLY`, `ALTER TYPE ... ADD
VALUE` before Postgres 12, `VACUUM`) cannot be used, and a file must not
issue its own `BEGIN`/`COMMIT`. Supporting them needs a per-file opt-out
marker run outside a transaction, which we have not needed yet.
"""

import dataclasses
import hashlib
import logging
import os
import re
from importlib.resources.abc import Traversable
from pathlib import Path

import psycopg

from koverage.db._connect import connect
from koverage.db._errors import (
    MigrationChecksumError,
    MigrationFailedError,
    MigrationFileError,
    MigrationHistoryError,
)

MIGRATIONS_TABLE = "koverage_schema_migrations"
"""Where applied migrations are recorded, one row per (owner, version)."""

# One key for the whole database: ASCII "KOVMIGR0" read as a big-endian
# 64-bit integer. Other advisory lock users must avoid it.
_LOCK_KEY = int.from_bytes(b"KOVMIGR0", "big", signed=True)
_FILE_PATTERN = re.compile(r"^(\d{4,})_([a-z0-9]+(?:_[a-z0-9]+)*)\.sql$")
_OWNER_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

_CREATE_TABLE_SQL = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    owner      text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, version)
)
"""

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    """NNNN from the file name."""

    name: str
    """The description from the file name."""

    checksum: str
    """SHA-256 of the file's bytes, hex."""

    sql: str = dataclasses.field(repr=False)
    """The file's text."""


@dataclasses.dataclass(frozen=True)
class AppliedMigration:
    """One row of `koverage_schema_migrations`."""

    version: int
    name: str
    checksum: str


def load_migrations(directory: str | os.PathLike | Traversable) -> list[Migration]:
    """Reads a migration directory, ordered by version.

    Files that do not end in `.sql` are ignored (`__init__.py`, a README).

    Args:
        directory: A directory path, or a package resource
            (`importlib.resources.files("services.chat") / "migrations"`).

    Raises:
        MigrationFileError: A `.sql` file is misnamed, or two share a version.
    """
    root = Path(directory) if isinstance(directory, (str, os.PathLike)) else directory
    if not root.is_dir():
        raise MigrationFileError(f"migration directory {root} does not exist")

    migrations: dict[int, Migration] = {}
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_PATTERN.match(entry.name)
        if match is None:
            raise MigrationFileError(
                f"{entry.name} in {root} is not named NNNN_description.sql "
                "(digits, '_', lower-case letters, digits and '_'); rename it"
            )
        version = int(match.group(1))
        if version in migrations:
            raise MigrationFileError(
                f"{entry.name} and {migrations[version].name} in {root} share "
                f"version {version}; give one a new number"
            )
        data = entry.read_bytes()
        migrations[version] = Migration(
            version=version,
            name=match.group(2),
            checksum=hashlib.sha256(data).hexdigest(),
            sql=data.decode("utf-8"),
        )
    return [migrations[v] for v in sorted(migrations)]


def migrate(
    database_url: str,
    *,
    owner: str,
    directory: str | os.PathLike | Traversable,
) -> list[Migration]:
    """Applies the owner's migrations the database lacks, in version order.

    Args:
        database_url: The database to migrate.
        owner: The owning service, such as "chat"; lower-case identifier.
        directory: The owner's migration directory (see `load_migrations`).

    Returns:
        The migrations applied by this call; empty when it was up to date.

    Raises:
        ValueError: `owner` is not a lower-case identifier.
        MigrationFileError: The directory is malformed.
        MigrationChecksumError: An applied file was changed since.
        MigrationHistoryError: The database has a version the directory lacks
            (code older than the schema).
        MigrationFailedError: A file's SQL failed; it and later files were
            not applied, earlier ones stay applied.
    """
    if not _OWNER_PATTERN.match(owner):
        raise ValueError(
            f"owner={owner!r} must be a lower-case identifier such as 'chat'"
        )
    migrations = load_migrations(directory)
    applied_now: list[Migration] = []

    with connect(database_url) as conn:
        with conn.transaction():
            _lock(conn)
            conn.execute(_CREATE_TABLE_SQL)
            applied = _applied(conn, owner)
        _check_history(owner, migrations, applied)

        for migration in migrations:
            if migration.version in applied:
                continue
            if _apply(conn, owner, migration):
                applied_now.append(migration)

    if applied_now:
        logger.info(
            "applied %d %s migration(s), now at version %d",
            len(applied_now),
            owner,
            applied_now[-1].version,
        )
    return applied_now


def applied_migrations(database_url: str, owner: str) -> list[AppliedMigration]:
    """Returns the owner's recorded migrations, by version; empty if none."""
    with connect(database_url) as conn:
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (MIGRATIONS_TABLE,)
        ).fetchone()[0]
        if not exists:
            return []
        return list(_applied(conn, owner).values())


def _lock(conn: psycopg.Connection) -> None:
    # Released by the enclosing transaction's commit or rollback.
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))


def _applied(conn: psycopg.Connection, owner: str) -> dict[int, AppliedMigration]:
    rows = conn.execute(
        f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE} "
        "WHERE owner = %s ORDER BY version",
        (owner,),
    ).fetchall()
    return {row[0]: AppliedMigration(*row) for row in rows}


def _check_history(
    owner: str, migrations: list[Migration], applied: dict[int, AppliedMigration]
) -> None:
    on_disk = {m.version: m for m in migrations}
    for version, record in applied.items():
        migration = on_disk.get(version)
        if migration is None:
            raise MigrationHistoryError(
                f"the database has {owner} migration {version:04d}_{record.name} "
                "but the migration directory does not; this code is older than "
                "the schema, so run the newer code or restore the file"
            )
        _check_checksum(owner, migration, record)


def _check_checksum(owner: str, migration: Migration, record: AppliedMigration) -> None:
    if migration.checksum != record.checksum:
        raise MigrationChecksumError(
            f"{owner} migration {migration.version:04d}_{migration.name}.sql was "
            f"changed after it was applied (checksum {migration.checksum[:12]} on "
            f"disk, {record.checksum[:12]} applied); restore the applied text "
            "and put the change in a new migration file"
        )


def _apply(conn: psycopg.Connection, owner: str, migration: Migration) -> bool:
    """Applies one file in its own transaction; False if another process did."""
    label = f"{owner} migration {migration.version:04d}_{migration.name}"
    with conn.transaction():
        _lock(conn)

        # Another process may have applied it while we waited for the lock.
        row = conn.execute(
            f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE} "
            "WHERE owner = %s AND version = %s",
            (owner, migration.version),
        ).fetchone()
        if row is not None:
            _check_checksum(owner, migration, AppliedMigration(*row))
            return False

        try:
            # No parameters, so psycopg sends the file as one simple query:
            # several statements run, and `%` needs no escaping.
            conn.execute(migration.sql.encode("utf-8"))
        except psycopg.Error as exc:
            raise MigrationFailedError(
                f"{label} failed and was rolled back: {exc}"
            ) from exc
        conn.execute(
            f"INSERT INTO {MIGRATIONS_TABLE} (owner, version, name, checksum) "
            "VALUES (%s, %s, %s, %s)",
            (owner, migration.version, migration.name, migration.checksum),
        )
    logger.info("applied %s", label)
    return True
