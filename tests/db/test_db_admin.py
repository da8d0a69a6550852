"""Database helpers: create and drop databases, URLs, connections and pools."""

import psycopg
import pytest
from psycopg import conninfo

from koverage.db import (
    connect,
    connect_async,
    create_database,
    create_pool,
    database_url,
    drop_database,
    open_async_pool,
)
from tests.engines import fresh_database, postgres_url

pytestmark = pytest.mark.integration


def _exists(name: str) -> bool:
    with connect(postgres_url()) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return row.fetchone() is not None


def test_create_and_drop_database():
    name = "koverage_test_admin_create"
    drop_database(postgres_url(), name)

    url = create_database(postgres_url(), name)
    try:
        with connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
        with pytest.raises(psycopg.errors.DuplicateDatabase):
            create_database(postgres_url(), name)
        assert create_database(postgres_url(), name, exist_ok=True) == url
    finally:
        drop_database(postgres_url(), name)

    assert not _exists(name)
    drop_database(postgres_url(), name)  # absent: no error


def test_drop_database_disconnects_open_sessions():
    name = "koverage_test_admin_busy"
    url = create_database(postgres_url(), name, exist_ok=True)
    session = connect(url)
    try:
        drop_database(postgres_url(), name)
        assert not _exists(name)
    finally:
        session.close()


@pytest.mark.parametrize("name", ["", "Upper", "with-dash", "1leading", "x" * 64])
def test_database_names_must_be_plain_identifiers(name):
    with pytest.raises(ValueError, match="not allowed"):
        create_database(postgres_url(), name)


def test_fresh_database_is_dropped_on_exit():
    with fresh_database("koverage_test_admin") as url:
        with connect(url) as conn:
            name = conn.execute("SELECT current_database()").fetchone()[0]
        assert name.startswith("koverage_test_admin_")
        assert _exists(name)

    assert not _exists(name)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgresql://postgres@127.0.0.1:5432/chat",
        ),
        (
            "postgresql://postgres:@/postgres?host=/tmp/pg&port=5432",
            "postgresql://postgres:@/chat?host=/tmp/pg&port=5432",
        ),
        (
            "postgres://u:p@h/db?sslmode=disable",
            "postgres://u:p@h/chat?sslmode=disable",
        ),
    ],
)
def test_database_url_replaces_only_the_database(url, expected):
    assert database_url(url, "chat") == expected


def test_database_url_keeps_key_value_strings_in_that_form():
    changed = database_url("host=/tmp/pg dbname=postgres user=postgres", "chat")

    assert conninfo.conninfo_to_dict(changed) == {
        "host": "/tmp/pg",
        "dbname": "chat",
        "user": "postgres",
    }


def test_pool_serves_queries():
    with (
        fresh_database("koverage_test_pool") as url,
        create_pool(url, min_size=1, max_size=2, name="test") as pool,
        pool.connection() as conn,
    ):
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)


async def test_async_connection_and_pool_serve_queries():
    with fresh_database("koverage_test_apool") as url:
        async with await connect_async(url) as conn:
            cursor = await conn.execute("SELECT 'a'")
            assert await cursor.fetchone() == ("a",)

        pool = await open_async_pool(url, max_size=2)
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute("SELECT 7")
                assert await cursor.fetchone() == (7,)
        finally:
            await pool.close()
