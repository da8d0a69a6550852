"""Creating and dropping whole databases, for tests and first-time setup."""

import logging
import re

from psycopg import errors, sql

from koverage.db._connect import connect, database_url

_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

logger = logging.getLogger(__name__)


def create_database(admin_url: str, name: str, *, exist_ok: bool = False) -> str:
    """Creates database `name` and returns a URL to it.

    Args:
        admin_url: URL of any database on the server, as a user allowed to
            create databases.
        name: Lower-case letters, digits and `_`, at most 63 characters.
        exist_ok: Return quietly when the database exists already.

    Returns:
        `admin_url` pointing at the new database.

    Raises:
        ValueError: `name` is not a plain identifier.
        psycopg.errors.DuplicateDatabase: It exists and `exist_ok` is False.
    """
    _validate(name)
    with connect(admin_url, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            logger.info("created database %s", name)
        except errors.DuplicateDatabase:
            if not exist_ok:
                raise
    return database_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drops database `name` if it exists, disconnecting its sessions first.

    Args:
        admin_url: URL of another database on the server, as its owner or
            a superuser.
        name: The database to drop.

    Raises:
        ValueError: `name` is not a plain identifier.
    """
    _validate(name)
    with connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )
    logger.info("dropped database %s", name)


def _validate(name: str) -> None:
    if not _NAME_PATTERN.match(name):
        raise ValueError(
            f"name={name!r} is not allowed: use 1-63 lower-case letters, digits "
            "and '_', not starting with a digit"
        )
