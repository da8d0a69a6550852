"""`koverage up` and `koverage status` as a user runs them: real processes,
embedded Postgres, the Tansu broker, the Rotel collector and every service;
each replaced by configuration; and how a local run picks its API key."""

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from koverage.cli import _up
from koverage.settings import Settings

_READY_LINE = "mesh is up; Ctrl-C stops it"
_START_TIMEOUT_S = 180


@pytest.fixture
def run_dir():
    """Outside pytest's tmp tree: as root, the embedded Postgres runs as
    another user, which needs every parent directory traversable, and pytest
    makes its own tree private to root."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="koverage-test-up-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(run_dir: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOVERAGE_")}
    env.update({"KOVERAGE_RUN_DIR": str(run_dir), "KOVERAGE_LOG_LEVEL": "WARNING"})
    return env


def _koverage(*args: str) -> list[str]:
    return [sys.executable, "-m", "koverage.cli._main", *args]


def _descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.integration
@pytest.mark.slow
def test_up_runs_the_mesh_reports_status_and_stops_cleanly(run_dir):
    env = _env(run_dir)
    up = subprocess.Popen(
        _koverage("up", "--port-base", "0", "--demo"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            output.append(line)
            if _READY_LINE in line:
                break
        text = "".join(output)
        assert _READY_LINE in text, text[-3000:]
        assert "grpcurl -plaintext -H 'authorization: Bearer kov_" in text
        assert "[complete] model=sim/steady" in text  # the streamed demo answer

        status = subprocess.run(
            _koverage("status", "--json"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        report = json.loads(status.stdout)
        assert status.returncode == 0, status.stdout + status.stderr
        assert set(report["services"]) >= {
            "router",
            "chat",
            "ingest",
            "worker",
            "underwriter",
        }
        assert all(s["healthy"] for s in report["services"].values())
        assert report["api_key"].startswith("kov_")
        assert report["database_url"].startswith("postgresql://")
        assert report["kafka_bootstrap"] and report["otlp_endpoint"]
        assert report["dashboard_url"].endswith("?token=" + report["api_key"])
        _assert_dashboard_signs_in(report["dashboard_url"])
        _assert_demo_trace_reached_postgres(report["database_url"], text)
        children = _descendants(up.pid)
        assert len(children) >= 8  # postgres, tansu, rotel and five services
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        up.stdout.close()

    time.sleep(0.5)
    assert not [
        pid
        for pid in children
        if psutil.pid_exists(pid)
        and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    after = subprocess.run(
        _koverage("status", "--json"), env=env, capture_output=True, text=True
    )
    assert after.returncode == 1
    assert "no mesh is running" in json.loads(after.stdout)["error"]


def _assert_demo_trace_reached_postgres(database_url: str, up_output: str) -> None:
    """The demo turn travels router -> Rotel -> ingest -> Tansu -> worker ->
    Postgres as one trace: chat -> router -> provider call."""
    import re

    import psycopg

    trace_id = re.search(r"trace=([0-9a-f]{32})", up_output).group(1)
    deadline = time.monotonic() + 60
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT name, span_id, parent_span_id, tenant FROM spans "
                "WHERE trace_id = %s ORDER BY start_time",
                (bytes.fromhex(trace_id),),
            ).fetchall()
            names = {r[0] for r in rows}
            if names >= {
                "chat sim/steady",
                "koverage.router.v1.RouterService/Generate",
                "koverage.chat.v1.ChatService/StreamChat",
            }:
                break
            time.sleep(0.5)
        by_name = {r[0]: r for r in rows}
        call = conn.execute(
            "SELECT model, input_tokens, output_tokens, status, tenant "
            "FROM llm_calls WHERE trace_id = %s",
            (bytes.fromhex(trace_id),),
        ).fetchone()
    chat = by_name["koverage.chat.v1.ChatService/StreamChat"]
    generate = by_name["koverage.router.v1.RouterService/Generate"]
    provider = by_name["chat sim/steady"]
    assert chat[2] is None
    assert provider[2] == generate[1]
    assert generate[2] == chat[1]
    assert call == ("sim/steady", 11, 24, "complete", "local")
    # The collector relays with a key of its own; the spans keep the tenant
    # of the key that made the call, not the collector's.
    assert {r[3] for r in rows} == {"local"}


def _assert_dashboard_signs_in(url: str) -> None:
    """The printed URL signs a browser in; without its token the API refuses."""
    import http.cookiejar
    import urllib.error
    import urllib.request

    base = url.split("?")[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + "api/overview?window=1h", timeout=10)
    assert refused.value.code == 401
    refused.value.close()
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(url, timeout=10) as page:
        assert page.status == 200
    assert any(c.name for c in jar)


@pytest.mark.integration
@pytest.mark.slow
def test_up_uses_a_configured_database_instead_of_the_embedded_one(run_dir):
    from tests.engines import fresh_database

    with fresh_database("koverage_test_up") as database_url:
        env = {**_env(run_dir), "KOVERAGE_DATABASE_URL": database_url}
        done = subprocess.run(
            _koverage("up", "--port-base", "0", "--exit-after-demo"),
            env=env,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert f"postgres     {database_url}" in done.stdout

        import psycopg

        with psycopg.connect(database_url) as conn:
            stored = conn.execute("SELECT count(*) FROM chat_messages").fetchone()[0]
        assert stored == 2  # the demo's question and answer
    assert not (run_dir / "postgres").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_up_uses_configured_kafka_collector_and_key_instead_of_embedded_ones(
    run_dir, trace_sink
):
    from confluent_kafka.admin import AdminClient

    from tests.engines import fresh_database, tansu_broker

    sink_address, sink = trace_sink
    with (
        fresh_database("koverage_test_up_engines") as database_url,
        tansu_broker() as bootstrap,
    ):
        env = {
            **_env(run_dir),
            "KOVERAGE_DATABASE_URL": database_url,
            "KOVERAGE_KAFKA_BOOTSTRAP": bootstrap,
            "KOVERAGE_OTLP_ENDPOINT": sink_address,
            "KOVERAGE_API_KEYS": "k-ops=ops,k-team=team",
            "KOVERAGE_CLIENT_API_KEY": "k-team",
        }
        done = subprocess.run(
            _koverage("up", "--port-base", "0", "--exit-after-demo"),
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S,
        )
        topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"kafka        {bootstrap}" in done.stdout
    assert f"otlp         {sink_address}" in done.stdout
    # The configured key, not a generated one, and the demo got through with it.
    assert "API key: k-team" in done.stdout
    assert "Bearer k-team" in done.stdout and "kov_" not in done.stdout
    assert "[complete] model=sim/steady" in done.stdout
    assert {"koverage.spans", "koverage.spans.dlq"} <= set(topics.topics)
    # Neither Tansu nor Rotel (nor Postgres) ran: the supervisor logs every
    # child it starts to <name>.log.
    logs = {p.name for p in (run_dir / "logs").iterdir()}
    assert {"router.log", "chat.log", "ingest.log"} <= logs
    assert not logs & {"tansu.log", "rotel.log", "postgres.log"}
    # The services exported their spans to the configured endpoint.
    names = set()
    while not sink.requests.empty():
        for resource_spans in sink.requests.get().resource_spans:
            for scope_spans in resource_spans.scope_spans:
                names.update(span.name for span in scope_spans.spans)
    assert "chat sim/steady" in names


def test_a_configured_client_key_is_used_and_accepted():
    settings = Settings.from_env(
        {"KOVERAGE_API_KEYS": "k-a=a, k-b=b", "KOVERAGE_CLIENT_API_KEY": "k-b"}
    )
    assert _up.resolve_api_keys(settings) == ("k-b", "k-a=a, k-b=b")


def test_without_a_client_key_the_first_configured_key_is_used():
    settings = Settings.from_env({"KOVERAGE_API_KEYS": "k-a=a,k-b=b"})
    assert _up.resolve_api_keys(settings) == ("k-a", "k-a=a,k-b=b")


def test_a_client_key_alone_is_accepted_as_the_local_tenant():
    settings = Settings.from_env({"KOVERAGE_CLIENT_API_KEY": "mine"})
    assert _up.resolve_api_keys(settings) == ("mine", "mine=local")


def test_without_any_key_one_is_generated_per_run():
    first, first_keys = _up.resolve_api_keys(Settings.from_env({}))
    second, _ = _up.resolve_api_keys(Settings.from_env({}))
    assert first.startswith("kov_") and len(first) > 20
    assert first != second
    assert first_keys == f"{first}=local"


def test_a_client_key_outside_the_accepted_keys_stops_up_before_it_starts(
    run_dir, monkeypatch, capsys
):
    for name in [k for k in os.environ if k.startswith("KOVERAGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KOVERAGE_RUN_DIR", str(run_dir))
    monkeypatch.setenv("KOVERAGE_API_KEYS", "k-a=a")
    monkeypatch.setenv("KOVERAGE_CLIENT_API_KEY", "k-secret-typo")
    args = argparse.Namespace(port_base=0, demo=False, exit_after_demo=True)

    code = _up.run(args)

    err = capsys.readouterr().err
    assert code == 2
    assert "KOVERAGE_CLIENT_API_KEY is not one of the keys in KOVERAGE_API_KEYS" in err
    assert "k-secret-typo" not in err  # keys are never printed
    assert not (run_dir / "logs").exists()  # nothing was started
