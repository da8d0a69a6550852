"""The Grafana dashboard's SQL runs on real Postgres over the telemetry contract.

The tables come from the worker's own migrations (every one of them, as
`koverage migrate` applies them), on a fresh database of the test Postgres
(tests/engines.py: the configured one, the machine's, or an embedded one), so
these tests never skip: a panel whose SQL no longer fits the schema fails.
"""

import json
import pathlib
import re

import psycopg
import pytest

from services.worker._app import migrate_database
from tests.engines import fresh_database

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_DASHBOARD = (
    _ROOT / "helm" / "koverage" / "files" / "dashboards" / "koverage-beacon.json"
)
_PANELS = [p["title"] for p in json.loads(_DASHBOARD.read_text())["panels"]]

_ROWS = [
    # minute, model, status, latency, ttft, in, out, cost
    (0, "qwen3-8b", "complete", 100.0, 20.0, 10, 50, 0.001),
    (0, "qwen3-8b", "complete", 200.0, 40.0, 10, 70, 0.002),
    (0, "gpt-x", "error", 300.0, None, 10, 0, 0.0),
    (1, "gpt-x", "complete", 400.0, 80.0, 20, 30, 0.010),
]


def _expand_macros(sql: str) -> str:
    """Grafana's PostgreSQL macros, as Grafana expands them, for a 1 m interval."""
    sql = re.sub(
        r"\$__timeGroupAlias\((\w+), \$__interval\)",
        r"date_bin('1 minute', \1, '2026-01-01') AS time",
        sql,
    )
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)",
        r"\1 BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-01T01:00:00Z'",
        sql,
    )
    sql = sql.replace("$__interval_ms", "60000").replace(
        "$model", "'qwen3-8b', 'gpt-x'"
    )
    assert "$" not in sql, sql
    return sql


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(_DASHBOARD.read_text())


@pytest.fixture(scope="module")
def database_url():
    with fresh_database("koverage_test_deploy_dashboard") as url:
        migrate_database(url)
        yield url


@pytest.fixture
def conn(database_url):
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("TRUNCATE llm_calls, spans")
        with connection.cursor() as cur:
            cur.executemany(
                "INSERT INTO llm_calls (trace_id, span_id, tenant, start_time, operation,"
                " provider, model, status, latency_ms, ttft_ms, input_tokens,"
                " output_tokens, cost_usd) VALUES (%s, %s, 'acme',"
                " '2026-01-01T00:00:00Z'::timestamptz + make_interval(mins => %s),"
                " 'chat', 'simulator', %s, %s, %s, %s, %s, %s, %s)",
                [
                    (bytes([i]) * 16, bytes([i]) * 8, *row)
                    for i, row in enumerate(_ROWS)
                ],
            )
        yield connection


def _panel(dashboard: dict, title: str) -> dict:
    return next(p for p in dashboard["panels"] if p["title"] == title)


def _query(conn, panel: dict) -> list[tuple]:
    (target,) = panel["targets"]
    return conn.execute(_expand_macros(target["rawSql"])).fetchall()


def test_dashboard_has_the_panels_under_test():
    assert {
        "Latency percentiles",
        "Time to first token",
        "Throughput",
        "Error rate",
        "Cost by model (range total)",
    } <= set(_PANELS)


@pytest.mark.parametrize("title", _PANELS)
def test_panel_query_runs_and_finds_the_rows(conn, dashboard, title):
    panel = _panel(dashboard, title)

    assert len(panel["targets"]) == 1, "each panel has one SQL target"
    assert _query(conn, panel)


def test_a_panel_query_that_does_not_fit_the_schema_fails(conn, dashboard):
    # Proves the previous test can fail: Postgres refuses an unknown column.
    panel = json.loads(json.dumps(_panel(dashboard, "Time to first token")))
    target = panel["targets"][0]
    target["rawSql"] = target["rawSql"].replace("ttft_ms", "ttft_msec")

    with pytest.raises(psycopg.errors.UndefinedColumn):
        _query(conn, panel)


def test_model_variable_lists_the_models(conn, dashboard):
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert {r[0] for r in conn.execute(variable["query"])} == {
                "qwen3-8b",
                "gpt-x",
            }


def test_latency_percentiles_per_minute(conn, dashboard):
    rows = _query(conn, _panel(dashboard, "Latency percentiles"))

    (_, p50, p95, p99), second = rows
    assert (p50, p95, p99) == (200.0, pytest.approx(290.0), pytest.approx(298.0))
    assert second[1:] == (400.0, 400.0, 400.0)


def test_ttft_ignores_calls_without_a_first_token(conn, dashboard):
    rows = _query(conn, _panel(dashboard, "Time to first token"))

    assert rows[0][1] == 30.0  # median of 20 and 40; the failed call has none


def test_error_rate_and_throughput(conn, dashboard):
    errors = _query(conn, _panel(dashboard, "Error rate"))
    throughput = _query(conn, _panel(dashboard, "Throughput"))

    assert [float(r[1]) for r in errors] == [pytest.approx(100 / 3), 0.0]
    assert [float(v) for v in throughput[0][1:]] == [
        pytest.approx(3 / 60),
        pytest.approx(120 / 60),
    ]


def test_cost_by_model(conn, dashboard):
    table = _query(conn, _panel(dashboard, "Cost by model (range total)"))

    assert [(r[0], r[1], float(r[2])) for r in table] == [
        ("gpt-x", 2, 0.010),
        ("qwen3-8b", 2, 0.003),
    ]
