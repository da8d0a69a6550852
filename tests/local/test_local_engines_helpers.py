"""tests/engines.py: the embedded Postgres fallback starts and cleans up at exit."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.engines import pid_alive

pytestmark = pytest.mark.integration

_REPO_ROOT = Path(__file__).resolve().parents[2]


def test_postgres_url_falls_back_to_embedded_postgres_and_cleans_up():
    # A child test process that finds no Postgres on the usual port.
    script = textwrap.dedent("""
        import psycopg
        import tests.engines as engines
        engines.LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:1/postgres"
        url = engines.postgres_url()
        with engines.fresh_database("koverage_test_fallback") as database:
            with psycopg.connect(database) as conn:
                conn.execute("CREATE TABLE t (id int)")
        print(url, flush=True)
    """)
    env = {k: v for k, v in os.environ.items() if k != "KOVERAGE_TEST_DATABASE_URL"}
    url = subprocess.run(
        [sys.executable, "-c", script],
        cwd=_REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()

    socket_dir = Path(parse_qs(urlsplit(url).query)["host"][0])
    assert socket_dir.name == "data"
    assert socket_dir.parent.name.startswith("koverage-test-pg-")
    # The data directory is gone; so is the server that used it.
    assert not socket_dir.parent.exists()
    leftovers = [
        pid
        for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
        if pid_alive(pid) and str(socket_dir).encode() in _cmdline(pid)
    ]
    assert leftovers == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
