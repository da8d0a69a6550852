"""Connections and pools to Postgres (psycopg 3) from a URL."""

import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator

import psycopg
from psycopg import conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from koverage.errors import UnavailableError

_CONNECT_TIMEOUT_S = 10

logger = logging.getLogger(__name__)


def connect(
    url: str, *, autocommit: bool = False, connect_timeout_s: int = _CONNECT_TIMEOUT_S
) -> psycopg.Connection:
    """Opens one connection; use it as a context manager to close it.

    Args:
        url: A `postgresql://` URL or a libpq `key=value` string.
        autocommit: Run each statement in its own transaction.
        connect_timeout_s: Give up connecting after this many seconds.
    """
    return psycopg.connect(
        url, autocommit=autocommit, connect_timeout=connect_timeout_s
    )


async def connect_async(
    url: str, *, autocommit: bool = False, connect_timeout_s: int = _CONNECT_TIMEOUT_S
) -> psycopg.AsyncConnection:
    """Opens one asyncio connection; `async with` it to close it."""
    return await psycopg.AsyncConnection.connect(
        url, autocommit=autocommit, connect_timeout=connect_timeout_s
    )


def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    name: str | None = None,
    timeout_s: float = 30.0,
) -> ConnectionPool:
    """Opens a pool of connections; close it with `pool.close()` or `with`.

    Args:
        url: A `postgresql://` URL or a libpq `key=value` string.
        min_size: Connections kept open.
        max_size: Most connections open at once.
        name: Pool name in psycopg's logs.
        timeout_s: How long `pool.connection()` waits for a free connection.
    """
    return ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        timeout=timeout_s,
        kwargs={"connect_timeout": _CONNECT_TIMEOUT_S},
        open=True,
    )


async def open_async_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    name: str | None = None,
    timeout_s: float = 30.0,
) -> AsyncConnectionPool:
    """Opens an asyncio pool (same arguments as `create_pool`); `await pool.close()`."""
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        timeout=timeout_s,
        kwargs={"connect_timeout": _CONNECT_TIMEOUT_S},
        open=False,
    )
    await pool.open()
    return pool


def database_url(url: str, dbname: str) -> str:
    """Returns `url` pointing at database `dbname`, everything else unchanged.

    Args:
        url: A `postgresql://` (or `postgres://`) URL, or a libpq `key=value`
            string, which comes back in the same form.
        dbname: The database to point at.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        path = "/" + urllib.parse.quote(dbname, safe="")
        query = [
            (k, v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if k != "dbname"
        ]
        return urllib.parse.urlunsplit(
            parts._replace(path=path, query=urllib.parse.urlencode(query, safe="/"))
        )
    return conninfo.make_conninfo(url, dbname=dbname)


@contextlib.asynccontextmanager
async def pooled_connection(
    pool: AsyncConnectionPool, database: str
) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection from `pool`; a database outage raises UnavailableError.

    Connection failures, a server that went away and a pool that timed out
    waiting for a connection (all `psycopg.OperationalError`) are transient
    for the caller, who gets UNAVAILABLE and may retry. Errors about the
    statement itself pass through unchanged.

    Args:
        pool: An open asyncio pool.
        database: What the database is for, in the message ("the chat
            database").
    """
    try:
        async with pool.connection() as conn:
            yield conn
    except psycopg.OperationalError as exc:
        logger.warning(
            "database unavailable",
            extra={"database": database, "error_type": type(exc).__name__},
        )
        raise UnavailableError(
            f"{database} is unavailable ({type(exc).__name__}); retry shortly"
        ) from exc
