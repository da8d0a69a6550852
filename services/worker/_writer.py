"""Writes decoded spans to Postgres: COPY into staging, then insert, skip dups.

One `write` call is one transaction: both staging tables are filled with
COPY, then `INSERT ... SELECT ... ON CONFLICT (trace_id, span_id) DO NOTHING`
moves the rows into `spans` and `llm_calls`. A span delivered twice (Kafka
redelivery, a sender's retry) is therefore stored once.
"""

import dataclasses
import logging

import psycopg

from koverage.db import connect
from services.worker._decode import LLM_CALL_COLUMNS, SPAN_COLUMNS, DecodedSpan

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
    """Writes batches of decoded spans over one reconnecting connection.

    Args:
        database_url: The worker's database (already migrated).
        connect_timeout_s: Give up a connection attempt after this long.
    """

    def __init__(self, database_url: str, *, connect_timeout_s: int = 5) -> None:
        self._url = database_url
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection | None = None

    def write(self, batch: list[DecodedSpan]) -> WriteResult:
        """Stores `batch` in one transaction.

        Raises:
            DatabaseUnavailableError: the connection failed; nothing committed
                (or, if the commit itself was cut off, possibly everything:
                a retry is safe either way).
            RowsRejectedError: Postgres refused a value; nothing committed.
        """
        if not batch:
            return WriteResult(0, 0)
        try:
            conn = self._connection()
            with conn.transaction():
                return self._write(conn, batch)
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailableError(str(exc).strip()) from exc
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.closed:
                self.close()
                raise DatabaseUnavailableError(str(exc).strip()) from exc
            raise RowsRejectedError(str(exc).strip()) from exc

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

    def _write(self, conn: psycopg.Connection, batch: list[DecodedSpan]) -> WriteResult:
        with conn.cursor() as cursor:
            _copy(cursor, "spans_stage", SPAN_COLUMNS, (d.span for d in batch))
            llm_rows = [d.llm_call for d in batch if d.llm_call is not None]
            if llm_rows:
                _copy(cursor, "llm_calls_stage", LLM_CALL_COLUMNS, llm_rows)

            cursor.execute(_insert_sql("spans", SPAN_COLUMNS))
            spans = cursor.rowcount
            llm_calls = 0
            if llm_rows:
                cursor.execute(_insert_sql("llm_calls", LLM_CALL_COLUMNS))
                llm_calls = cursor.rowcount
        return WriteResult(spans, llm_calls)


def _copy(cursor, table: str, columns: tuple[str, ...], rows) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(columns)
    return (
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {table}_stage "
        "ON CONFLICT (trace_id, span_id) DO NOTHING"
    )
