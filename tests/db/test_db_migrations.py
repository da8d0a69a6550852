"""Migration runner: apply, re-apply, upgrade in place, checksums, concurrency."""

import threading
from pathlib import Path

import psycopg
import pytest

from koverage.db import (
    MIGRATIONS_TABLE,
    MigrationChecksumError,
    MigrationFailedError,
    MigrationFileError,
    MigrationHistoryError,
    applied_migrations,
    connect,
    load_migrations,
    migrate,
)
from tests.engines import fresh_database

pytestmark = pytest.mark.integration

_FIRST = "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL);\n"
_SECOND = (
    "ALTER TABLE notes ADD COLUMN tag text NOT NULL DEFAULT '100% organic';\n"
    "CREATE INDEX notes_tag ON notes (tag);\n"
)
_THIRD = "CREATE TABLE labels (name text PRIMARY KEY);\n"


@pytest.fixture
def database_url():
    with fresh_database("koverage_test_db") as url:
        yield url


@pytest.fixture
def migrations(tmp_path) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "0001_create_notes.sql").write_text(_FIRST)
    (directory / "0002_add_tag.sql").write_text(_SECOND)
    (directory / "__init__.py").write_text("")  # not SQL: ignored
    return directory


def _tables(url: str) -> set[str]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def _records(url: str) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute(
            f"SELECT owner, version, name, checksum, applied_at FROM {MIGRATIONS_TABLE} "
            "ORDER BY owner, version"
        ).fetchall()


def test_migrate_applies_files_in_order_and_records_them(database_url, migrations):
    applied = migrate(database_url, owner="chat", directory=migrations)

    assert [(m.version, m.name) for m in applied] == [
        (1, "create_notes"),
        (2, "add_tag"),
    ]
    assert {"notes", MIGRATIONS_TABLE} <= _tables(database_url)
    with connect(database_url) as conn:
        conn.execute("INSERT INTO notes (id, body) VALUES (1, 'x')")
        assert conn.execute("SELECT tag FROM notes").fetchone() == ("100% organic",)
    records = _records(database_url)
    assert [r[:3] for r in records] == [
        ("chat", 1, "create_notes"),
        ("chat", 2, "add_tag"),
    ]
    assert [r[3] for r in records] == [m.checksum for m in load_migrations(migrations)]


def test_migrate_twice_is_a_no_op(database_url, migrations):
    migrate(database_url, owner="chat", directory=migrations)
    before = _records(database_url)

    assert migrate(database_url, owner="chat", directory=migrations) == []
    assert _records(database_url) == before


def test_new_files_upgrade_an_existing_database_in_place(database_url, migrations):
    migrate(database_url, owner="chat", directory=migrations)
    with connect(database_url) as conn:
        conn.execute("INSERT INTO notes (id, body) VALUES (7, 'kept')")
    (migrations / "0003_create_labels.sql").write_text(_THIRD)

    applied = migrate(database_url, owner="chat", directory=migrations)

    assert [m.version for m in applied] == [3]
    assert "labels" in _tables(database_url)
    with connect(database_url) as conn:
        assert conn.execute("SELECT id, body FROM notes").fetchall() == [(7, "kept")]
    assert [a.version for a in applied_migrations(database_url, "chat")] == [1, 2, 3]


def test_an_edited_applied_file_is_refused(database_url, migrations):
    migrate(database_url, owner="chat", directory=migrations)
    (migrations / "0001_create_notes.sql").write_text(_FIRST + "-- tweak\n")
    (migrations / "0003_create_labels.sql").write_text(_THIRD)

    with pytest.raises(
        MigrationChecksumError, match="0001_create_notes.sql was changed"
    ):
        migrate(database_url, owner="chat", directory=migrations)
    assert "labels" not in _tables(database_url)


def test_a_failing_file_rolls_back_entirely(database_url, migrations):
    (migrations / "0003_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;\n"
    )

    with pytest.raises(MigrationFailedError, match="0003_broken failed") as caught:
        migrate(database_url, owner="chat", directory=migrations)

    assert isinstance(caught.value.__cause__, psycopg.errors.UndefinedTable)
    assert "half_done" not in _tables(database_url)
    assert [a.version for a in applied_migrations(database_url, "chat")] == [1, 2]


def test_concurrent_migrations_apply_each_file_once(database_url, migrations):
    # Plain CREATE TABLE fails if run twice, so a double apply would raise.
    for version in range(3, 9):
        (migrations / f"{version:04d}_table_{version}.sql").write_text(
            f"CREATE TABLE t{version} (id int);\n"
        )
    results: list[list] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(database_url, owner="chat", directory=migrations))
        except Exception as exc:  # noqa: BLE001 - reported below, not lost
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    applied_versions = sorted(m.version for result in results for m in result)
    assert applied_versions == list(range(1, 9))
    assert [r[1] for r in _records(database_url)] == list(range(1, 9))


def test_owners_keep_separate_histories(database_url, migrations, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "0001_create_labels.sql").write_text(_THIRD)

    migrate(database_url, owner="chat", directory=migrations)
    applied = migrate(database_url, owner="underwriter", directory=other)

    assert [m.version for m in applied] == [1]
    assert [(r[0], r[1]) for r in _records(database_url)] == [
        ("chat", 1),
        ("chat", 2),
        ("underwriter", 1),
    ]


def test_a_database_newer_than_the_directory_is_refused(database_url, migrations):
    migrate(database_url, owner="chat", directory=migrations)
    (migrations / "0002_add_tag.sql").unlink()

    with pytest.raises(MigrationHistoryError, match="0002_add_tag"):
        migrate(database_url, owner="chat", directory=migrations)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["1_short.sql"], "not named NNNN_description"),
        (["0001_Upper.sql"], "not named NNNN_description"),
        (["0001_one.sql", "0001_two.sql"], "share version 1"),
    ],
)
def test_malformed_directories_are_refused(tmp_path, files, message):
    for name in files:
        (tmp_path / name).write_text("SELECT 1;")

    with pytest.raises(MigrationFileError, match=message):
        load_migrations(tmp_path)


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(MigrationFileError, match="does not exist"):
        load_migrations(tmp_path / "absent")


def test_owner_must_be_an_identifier(database_url, migrations):
    with pytest.raises(ValueError, match="owner='Chat Service'"):
        migrate(database_url, owner="Chat Service", directory=migrations)


def test_applied_migrations_is_empty_on_a_new_database(database_url):
    assert applied_migrations(database_url, "chat") == []
