"""Embedded Postgres: starts, answers, keeps its data, stops without leftovers."""

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from koverage.local import EmbeddedPostgres, Supervisor, free_port
from tests.engines import child_pids, pid_alive

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_root():
    # Not under tmp_path: as root, Postgres runs as another user who must
    # traverse the parents, and every pytest start resets
    # /tmp/pytest-of-root to mode 0700.
    root = Path(tempfile.mkdtemp(prefix="koverage-test-pg-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_embedded_postgres_answers_and_stops_completely(pg_root):
    server = EmbeddedPostgres(pg_root / "data", durable=False)

    url = server.start()
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (42)")
        conn.commit()
        postmaster = server.process.pid
        backends = child_pids(postmaster)
    server.stop()

    assert int(version) >= 180000
    assert backends  # checkpointer, walwriter and friends
    assert not pid_alive(postmaster)
    assert not any(pid_alive(pid) for pid in backends)
    assert (pg_root / "postgres.log").read_text().count("database system is ready") == 1
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)

    # A restart reuses the data directory; this time on TCP too.
    port = free_port()
    with (
        EmbeddedPostgres(pg_root / "data", durable=False, tcp_port=port) as again,
        psycopg.connect(again.url) as conn,
    ):
        assert again.url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        assert conn.execute("SELECT id FROM kept").fetchall() == [(42,)]


def test_embedded_postgres_runs_under_a_shared_supervisor(pg_root):
    # A data directory too deep for a Unix socket path gets a short socket dir.
    deep = pg_root / ("d" * 60) / ("e" * 60) / "data"
    deep.parent.mkdir(parents=True)
    with Supervisor(pg_root / "run") as supervisor:
        supervisor.start_process("neighbour", ["sleep", "60"])
        server = EmbeddedPostgres(deep, supervisor=supervisor)

        url = server.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
        assert str(deep) not in url
        assert [p.name for p in supervisor.processes] == ["neighbour", "postgres"]
        postmaster = server.process.pid

        server.stop()
        assert [p.name for p in supervisor.processes] == ["neighbour"]
        assert not pid_alive(postmaster)
    assert (pg_root / "run" / "postgres.log").exists()


def test_embedded_postgres_rejects_a_bad_port(tmp_path):
    with pytest.raises(ValueError, match="tcp_port=70000"):
        EmbeddedPostgres(tmp_path, tcp_port=70000)
