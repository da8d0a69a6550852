"""Writes encoded spans to Postgres with a binary COPY, storing each span once.

Rows arrive already encoded as joined binary COPY tuples (`EncodedRows`,
see `services.worker._copy_encode`), so writing a batch is sending its
bytes: the writer thread needs the GIL only briefly.

One `write` call is one transaction. The common case (no row of the batch is
stored yet) COPYs the rows straight into `spans` and `llm_calls`, which costs
Postgres no more than a raw COPY. When that COPY hits the primary key (a
batch redelivered after a crash or rebalance, a sender's retried export),
the transaction is rolled back and the batch is merged instead: COPY into
temporary staging tables, then `INSERT ... SELECT ... ON CONFLICT (trace_id,
span_id) DO NOTHING`. Either way a span delivered twice is stored once.

After a conflict the writer keeps merging for a few batches, since a
redelivery usually spans several batches in a row; a merge costs about twice
the server time of a plain COPY, and a COPY that conflicts wastes its work.

Known limitation: with two writers, the same span in two batches in flight
(a sender's retried export) can deadlock them; each deadlock costs one
`deadlock_timeout` (1 s by default) before the retry. Writing each batch's
rows sorted by (trace_id, span_id) would rule it out, at the cost of a sort.
"""

import dataclasses
import logging

import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import PyFormat

from koverage.db import connect
from services.worker._copy_encode import EncodedRows, copy_data
from services.worker._decode import (
    LLM_CALL_COLUMNS,
    SPAN_COLUMNS,
)

_MERGE_BATCHES_AFTER_CONFLICT = 4
# Deadlocks between writers clear once one commits; past this many in a row
# the write is reported as the database being unavailable (retried later).
_DEADLOCK_ATTEMPTS = 5

logger = logging.getLogger(__name__)

_STAGING_SQL = """
CREATE TEMP TABLE IF NOT EXISTS spans_stage
    (LIKE spans INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS llm_calls_stage
    (LIKE llm_calls INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
"""


class DatabaseUnavailableError(Exception):
    """Postgres cannot be reached or dropped the connection; retry later."""


class RowsRejectedError(Exception):
    """Postgres refused the rows themselves (not a connectivity problem)."""


@dataclasses.dataclass(frozen=True)
class WriteResult:
    """Rows newly stored by one write (duplicates are not counted)."""

    spans: int
    llm_calls: int


class SpanWriter:
    """Writes batches of encoded spans over one reconnecting connection.

    Not thread-safe: one thread writes at a time. Several writers may write
    to the same tables at once; a span in two of their batches can deadlock
    them, which Postgres breaks by rolling one back (after its
    `deadlock_timeout`, 1 s by default), and that one is retried as a merge.

    Args:
        database_url: The worker's database (already migrated).
        connect_timeout_s: Give up a connection attempt after this long.
    """

    def __init__(self, database_url: str, *, connect_timeout_s: int = 5) -> None:
        self._url = database_url
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection | None = None
        self._merge_batches_left = 0
        self.conflicts = 0
        """Batches whose plain COPY met an already-stored span (then merged)."""
        self.deadlocks = 0
        """Writes Postgres rolled back to break a deadlock (then retried)."""

    def write(self, batch: EncodedRows) -> WriteResult:
        """Stores `batch` in one transaction.

        Raises:
            DatabaseUnavailableError: the connection failed; nothing committed
                (or, if the commit itself was cut off, possibly everything:
                a retry is safe either way).
            RowsRejectedError: Postgres refused a value; nothing committed.
        """
        if not batch.span_count:
            return WriteResult(0, 0)
        try:
            conn = self._connection()
            for _ in range(_DEADLOCK_ATTEMPTS):
                try:
                    return self._write_once(conn, batch)
                except pg_errors.DeadlockDetected:
                    # Another connection holds some of these spans, not yet
                    # committed, and waits for one this write holds (the same
                    # span in two batches in flight). Postgres rolled this
                    # write back; merging again waits for the other's commit.
                    self.deadlocks += 1
                    self._merge_batches_left = max(self._merge_batches_left, 1)
                    logger.warning("write deadlocked with another writer; retrying")
            raise DatabaseUnavailableError(
                f"write deadlocked {_DEADLOCK_ATTEMPTS} times in a row"
            )
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailableError(str(exc).strip()) from exc
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.closed:
                self.close()
                raise DatabaseUnavailableError(str(exc).strip()) from exc
            raise RowsRejectedError(str(exc).strip()) from exc

    def _write_once(self, conn: psycopg.Connection, batch: EncodedRows) -> WriteResult:
        if self._merge_batches_left > 0:
            self._merge_batches_left -= 1
            return self._in_transaction(conn, _merge, batch)
        try:
            return self._in_transaction(conn, _copy_into_tables, batch)
        except pg_errors.UniqueViolation:
            # Some span is stored already: merge the batch instead.
            self.conflicts += 1
            self._merge_batches_left = _MERGE_BATCHES_AFTER_CONFLICT
            return self._in_transaction(conn, _merge, batch)

    def close(self) -> None:
        """Closes the connection; the next write reconnects."""
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = connect(self._url, connect_timeout_s=self._connect_timeout_s)
            conn.execute(_STAGING_SQL)
            conn.commit()
            self._conn = conn
        return self._conn

    @staticmethod
    def _in_transaction(conn, write, batch: EncodedRows) -> WriteResult:
        with conn.transaction(), conn.cursor() as cursor:
            return write(cursor, batch)


def copy_rows(
    cursor: psycopg.Cursor,
    table: str,
    columns: tuple[str, ...],
    types: tuple[str, ...],
    rows: list[tuple],
) -> None:
    """COPYs decoded rows (see `services.worker._decode`) into `table`, binary.

    Args:
        cursor: A cursor in the transaction to write in.
        table: `spans`, `llm_calls` or a table like them.
        columns: `SPAN_COLUMNS` or `LLM_CALL_COLUMNS`.
        types: `SPAN_TYPES` or `LLM_CALL_TYPES`.
        rows: Row tuples in `columns` order.
    """
    _use_fast_bytea_dumper(cursor)
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with cursor.copy(statement) as copy:
        copy.set_types(_wire_types(types))
        write_row = copy.write_row
        for row in rows:
            write_row(row)


def copy_encoded(
    cursor: psycopg.Cursor, table: str, columns: tuple[str, ...], tuples: bytes
) -> None:
    """COPYs joined binary COPY tuples (`services.worker._copy_encode`) into `table`.

    Args:
        cursor: A cursor in the transaction to write in.
        table: `spans`, `llm_calls` or a table like them.
        columns: `SPAN_COLUMNS` or `LLM_CALL_COLUMNS`, the tuples' fields.
        tuples: Encoded tuples of `columns`, joined.
    """
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with cursor.copy(statement) as copy:
        copy.write(copy_data(tuples))


def _copy_into_tables(cursor, batch: EncodedRows) -> WriteResult:
    copy_encoded(cursor, "spans", SPAN_COLUMNS, batch.spans)
    if batch.llm_call_count:
        copy_encoded(cursor, "llm_calls", LLM_CALL_COLUMNS, batch.llm_calls)
    return WriteResult(batch.span_count, batch.llm_call_count)


def _merge(cursor, batch: EncodedRows) -> WriteResult:
    copy_encoded(cursor, "spans_stage", SPAN_COLUMNS, batch.spans)
    if batch.llm_call_count:
        copy_encoded(cursor, "llm_calls_stage", LLM_CALL_COLUMNS, batch.llm_calls)

    cursor.execute(_insert_sql("spans", SPAN_COLUMNS))
    spans = cursor.rowcount
    llm_calls = 0
    if batch.llm_call_count:
        cursor.execute(_insert_sql("llm_calls", LLM_CALL_COLUMNS))
        llm_calls = cursor.rowcount
    return WriteResult(spans, llm_calls)


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(columns)
    return (
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {table}_stage "
        "ON CONFLICT (trace_id, span_id) DO NOTHING"
    )


def _use_fast_bytea_dumper(cursor: psycopg.Cursor) -> None:
    # `copy.set_types` picks dumpers by type oid, and for bytea that is the
    # DB-API `Binary` dumper, a Python subclass called once per value.
    # Registering psycopg's own bytes dumper again makes it the bytea dumper
    # of this cursor, which is C code in psycopg's binary package.
    adapters = cursor.adapters
    adapters.register_dumper(bytes, adapters.get_dumper(bytes, PyFormat.BINARY))


def _wire_types(types: tuple[str, ...]) -> list[str]:
    # The decoder hands jsonb values over in jsonb's binary form already;
    # psycopg's bytea dumper (C) sends bytes as they are, where its jsonb
    # dumper would encode the value again, in Python, once per row.
    return ["bytea" if name == "jsonb" else name for name in types]
