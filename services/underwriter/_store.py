"""Evaluation runs in Postgres (the underwriter owns `underwriter_runs`).

A database that cannot be reached (connection refused, pool timeout) raises
`UnavailableError` (UNAVAILABLE at the gRPC boundary), so callers may retry.
"""

import base64
import dataclasses
import datetime
import json
import logging
import uuid

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from koverage.db import pooled_connection
from koverage.errors import InvalidArgumentError, NotFoundError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StoredRun:
    """A run as stored."""

    id: str
    tenant: str
    state: str
    spec: dict
    created_at: datetime.datetime
    finished_at: datetime.datetime | None
    scorecard: dict | None
    error: str


class RunStore:
    """Reads and writes runs for one tenant at a time."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    def _connection(self):
        """A pooled connection; a database outage becomes UnavailableError."""
        return pooled_connection(self._pool, "the underwriter's database")

    async def create(self, tenant: str, run_id: str, spec: dict) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO underwriter_runs (id, tenant, state, spec) "
                "VALUES (%s, %s, 'running', %s)",
                (run_id, tenant, Jsonb(spec)),
            )

    async def finish(self, run_id: str, scorecard: dict, report_pdf: bytes) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE underwriter_runs SET state = 'succeeded', finished_at = now(), "
                "scorecard = %s, report_pdf = %s WHERE id = %s",
                (Jsonb(scorecard), report_pdf, run_id),
            )

    async def fail(self, run_id: str, error: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE underwriter_runs SET state = 'failed', finished_at = now(), "
                "error = %s WHERE id = %s",
                (error[:2000], run_id),
            )

    async def fail_abandoned(self) -> int:
        """Marks runs left running by a stopped process as failed."""
        async with self._connection() as conn:
            cursor = await conn.execute(
                "UPDATE underwriter_runs SET state = 'failed', finished_at = now(), "
                "error = 'the underwriter stopped before the run finished; start it again' "
                "WHERE state = 'running'"
            )
            return cursor.rowcount

    async def get(self, tenant: str, run_id: str) -> StoredRun:
        """Raises NotFoundError for unknown runs and other tenants' runs."""
        parsed = parse_run_id(run_id)
        async with self._connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "SELECT id, tenant, state, spec, created_at, finished_at, scorecard, error "
                "FROM underwriter_runs WHERE id = %s AND tenant = %s",
                (parsed, tenant),
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFoundError(f"run {run_id} not found")
        return _run(row)

    async def report_pdf(self, tenant: str, run_id: str) -> bytes | None:
        async with self._connection() as conn:
            cursor = await conn.execute(
                "SELECT report_pdf FROM underwriter_runs WHERE id = %s AND tenant = %s",
                (parse_run_id(run_id), tenant),
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFoundError(f"run {run_id} not found")
        return row[0]

    async def list(
        self, tenant: str, page_size: int, page_token: str
    ) -> tuple[list[StoredRun], str]:
        """One page, newest first; keyset pagination on (created_at, id)."""
        after = _decode_token(page_token) if page_token else None
        query = (
            "SELECT id, tenant, state, spec, created_at, finished_at, scorecard, error "
            "FROM underwriter_runs WHERE tenant = %s "
        )
        params: list = [tenant]
        if after is not None:
            query += "AND (created_at, id) < (%s, %s) "
            params += list(after)
        query += "ORDER BY created_at DESC, id DESC LIMIT %s"
        params.append(page_size + 1)
        async with self._connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(query, params)
            rows = await cursor.fetchall()
        runs = [_run(r) for r in rows[:page_size]]
        token = ""
        if len(rows) > page_size:
            last = runs[-1]
            token = _encode_token(last.created_at, last.id)
        return runs, token


def parse_run_id(run_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(run_id)
    except (ValueError, AttributeError):
        raise InvalidArgumentError(
            f"run_id {run_id[:64]!r} is not a UUID", field="run_id"
        ) from None


def _run(row: dict) -> StoredRun:
    return StoredRun(
        id=str(row["id"]),
        tenant=row["tenant"],
        state=row["state"],
        spec=row["spec"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        scorecard=row["scorecard"],
        error=row["error"],
    )


def _encode_token(created_at: datetime.datetime, run_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> tuple[datetime.datetime, uuid.UUID]:
    try:
        created, run_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.datetime.fromisoformat(created), uuid.UUID(run_id)
    except (ValueError, TypeError):
        raise InvalidArgumentError(
            "page_token is malformed", field="page_token"
        ) from None
