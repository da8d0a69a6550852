"""Real engines for tests: Postgres, a Tansu broker, a Rotel collector.

Import these from any conftest and wrap them in fixtures of the scope you
need, for example:

    @pytest.fixture(scope="session")
    def kafka_bootstrap():
        with tansu_broker() as bootstrap:
            yield bootstrap

    @pytest.fixture
    def database_url():
        with fresh_database("koverage_test_chat") as url:
            yield url

Every engine started here stops when its context exits, and in any case when
the test process exits.
"""

import atexit
import contextlib
import os
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg

from koverage.db import create_database, drop_database
from koverage.local import EmbeddedPostgres, RotelCollector, TansuBroker

DATABASE_URL_ENV = "KOVERAGE_TEST_DATABASE_URL"
"""Postgres URL (any database, as a user that may create databases) to use."""

KAFKA_BOOTSTRAP_ENV = "KOVERAGE_TEST_KAFKA_BOOTSTRAP"
"""Kafka bootstrap servers to use instead of starting Tansu."""

LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The machine's Postgres, used when it answers and no URL is configured."""

_PREFIX_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_postgres_lock = threading.Lock()
_postgres_url = ""


def postgres_url() -> str:
    """Returns an admin URL of a Postgres that tests may create databases on.

    In order: `KOVERAGE_TEST_DATABASE_URL`; the machine's Postgres at
    127.0.0.1:5432 if it answers; else an embedded Postgres started once per
    test process (non-durable, in a temporary directory removed at exit).
    """
    global _postgres_url
    with _postgres_lock:
        if not _postgres_url:
            _postgres_url = _find_or_start_postgres()
        return _postgres_url


@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """Creates a uniquely named database, yields its URL, then drops it.

    Args:
        prefix: Start of the name, such as "koverage_test_chat"; the process
            id and a random suffix are appended.
    """
    if not _PREFIX_PATTERN.match(prefix):
        raise ValueError(
            f"prefix={prefix!r} must be lower-case letters, digits and '_' "
            "(at most 41 characters)"
        )
    admin_url = postgres_url()
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    url = create_database(admin_url, name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


@contextlib.contextmanager
def tansu_broker() -> Iterator[str]:
    """Starts a Tansu broker (or uses `KOVERAGE_TEST_KAFKA_BOOTSTRAP`); yields bootstrap.

    Tansu creates no topics on first use: call
    `koverage.local.ensure_topics(bootstrap, {...})`, and build consumers
    with `koverage.local.consumer_config` so a group forms in ~3 s.
    """
    configured = os.environ.get(KAFKA_BOOTSTRAP_ENV, "")
    if configured:
        yield configured
        return
    with TansuBroker() as broker:
        yield broker.bootstrap


@contextlib.contextmanager
def rotel_collector(export_to: str) -> Iterator[str]:
    """Starts a Rotel collector forwarding OTLP to `export_to`; yields its gRPC endpoint."""
    with RotelCollector(export_to) as collector:
        yield collector.grpc_endpoint


def pid_alive(pid: int) -> bool:
    """Returns True if `pid` runs (a zombie, exited but unreaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command name.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def child_pids(pid: int) -> list[int]:
    """Returns the direct children of `pid` (Linux), [] if it is gone."""
    children: list[int] = []
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return children
    for thread in threads:
        with contextlib.suppress(FileNotFoundError):
            children += [int(c) for c in (thread / "children").read_text().split()]
    return children


def _find_or_start_postgres() -> str:
    configured = os.environ.get(DATABASE_URL_ENV, "")
    if configured:
        return configured
    try:
        with psycopg.connect(LOCAL_POSTGRES_URL, connect_timeout=2):
            return LOCAL_POSTGRES_URL
    except psycopg.OperationalError:
        pass

    # LIFO: registered after the supervisor's own hook, so it runs first.
    data_root = Path(tempfile.mkdtemp(prefix="koverage-test-pg-"))
    server = EmbeddedPostgres(data_root / "data", durable=False)
    url = server.start()

    def cleanup() -> None:
        server.stop()
        shutil.rmtree(data_root, ignore_errors=True)

    atexit.register(cleanup)
    return url
