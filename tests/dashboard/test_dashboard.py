"""End-to-end: the dashboard in headless Chromium over a live mesh's data."""

import json
import urllib.error
import urllib.request

import psycopg
import pytest

from tests.dashboard.conftest import (
    API_KEY,
    INJECTED,
    OTHER_KEY,
    TENANT,
    screenshot,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_RENDER_TIMEOUT_MS = 15_000


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _sign_in(page, dashboard, view: str = "live") -> None:
    page.goto(f"{dashboard.url}?token={API_KEY}#{view}")
    page.wait_for_selector(f"body[data-rendered='{view}']", timeout=_RENDER_TIMEOUT_MS)


def _fetch_one(database_url: str, sql: str, params=()) -> tuple:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchone()


def test_requests_without_the_key_are_refused(dashboard, page):
    for path in ("api/overview", "api/conversations", "api/runs", "api/session"):
        status, _, body = _get(dashboard.url + path)
        assert status == 401, path
        assert "API key" in json.loads(body)["error"]
    status, _, _ = _get(dashboard.url + "api/runs", {"Authorization": "Bearer nope"})
    assert status == 401

    # The page asks for the key, and a wrong key is refused.
    response = page.goto(dashboard.url)
    assert response.status == 401
    assert page.locator("#login-form input[name=key]").is_visible()
    page.fill("#key", "not-a-key")
    page.click("#login-form button")
    page.wait_for_load_state()
    assert "not accepted" in page.text_content("#login-error")
    screenshot(page, "sign-in")


def test_key_form_and_token_url_sign_in_with_an_httponly_cookie(dashboard, page):
    page.goto(dashboard.url)
    page.fill("#key", API_KEY)
    page.click("#login-form button")
    page.wait_for_selector("body[data-rendered='live']", timeout=_RENDER_TIMEOUT_MS)

    page.context.clear_cookies()
    _sign_in(page, dashboard)
    assert "token" not in page.url  # redirected to the clean URL
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert API_KEY not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # invisible to scripts
    assert page.text_content("#tenant-name") == TENANT


def test_live_view_shows_the_numbers_the_database_holds(dashboard, mesh, page):
    _sign_in(page, dashboard)
    latency, ttft, calls, errors, refused, slowest = _fetch_one(
        mesh.database_url,
        "SELECT percentile_cont(ARRAY[0.5,0.95,0.99]) WITHIN GROUP (ORDER BY latency_ms),"
        " percentile_cont(ARRAY[0.5,0.95,0.99]) WITHIN GROUP (ORDER BY ttft_ms),"
        " count(*), count(*) FILTER (WHERE status='error'),"
        " count(*) FILTER (WHERE status='refused'), max(latency_ms)"
        " FROM llm_calls WHERE tenant = %s",
        (TENANT,),
    )
    assert calls >= 5
    assert page.text_content("#calls-total") == str(calls)
    for i, p in enumerate(("p50", "p95", "p99")):
        assert page.text_content(f"#latency-{p}") == f"{latency[i]:.1f} ms"
        assert page.text_content(f"#ttft-{p}") == f"{ttft[i]:.1f} ms"
    assert page.text_content("#error-count") == f"{errors} errors"
    assert page.text_content("#refusal-count") == f"{refused} refused"

    # The charts drew the same calls, bucket by bucket.
    chart_calls = page.evaluate(
        "window.koverageCharts['chart-throughput'].data[1].reduce((a, b) => a + b, 0)"
    )
    assert chart_calls == calls
    assert page.locator("#chart-latency canvas").count() == 1
    chart_p99 = page.evaluate(
        "Math.max(...window.koverageCharts['chart-latency'].data[3].filter(v => v !== null))"
    )
    assert latency[2] <= chart_p99 <= slowest

    # Tokens and cost by model match the table's rows.
    with psycopg.connect(mesh.database_url) as conn:
        by_model = conn.execute(
            "SELECT model, count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd)"
            " FROM llm_calls WHERE tenant = %s GROUP BY model",
            (TENANT,),
        ).fetchall()
    for model, n, tokens_in, tokens_out, cost in by_model:
        cells = page.locator(
            f"#cost-table tr[data-model='{model}'] td"
        ).all_text_contents()
        assert cells[2:5] == [str(n), str(tokens_in), str(tokens_out)]
        assert float(cells[5]) == pytest.approx(float(cost))
    assert page.text_content("#dropped-total").isdigit()
    assert page.js_errors == []
    screenshot(page, "live")


def test_conversation_waterfall_shows_its_spans_in_order(dashboard, mesh, page):
    conversation = mesh.conversations[0]  # two turns: two traces
    _sign_in(page, dashboard, "conversations")
    page.click(f"tr[data-conversation='{conversation}']")
    page.wait_for_selector(
        f"body[data-rendered='conversation/{conversation}']",
        timeout=_RENDER_TIMEOUT_MS,
    )

    with psycopg.connect(mesh.database_url) as conn:
        expected = conn.execute(
            "SELECT encode(trace_id, 'hex'), encode(span_id, 'hex'), name FROM spans"
            " WHERE tenant = %s AND trace_id IN (SELECT trace_id FROM llm_calls"
            "   WHERE conversation_id = %s)"
            " ORDER BY trace_id, start_time, span_id",
            (TENANT, conversation),
        ).fetchall()
    traces = page.locator("#waterfall .trace")
    assert traces.count() == len({t for t, _, _ in expected}) == 2
    shown = [
        (trace.get_attribute("data-trace"), row.get_attribute("data-span"))
        for trace in traces.all()
        for row in trace.locator(".span-row").all()
    ]
    assert shown == [(t, s) for t, s, _ in expected]

    # chat -> router -> provider call: the LLM call is nested below the
    # trace's root and carries its TTFT bar, tokens, cost and status.
    first = traces.first
    depths = [
        int(d)
        for d in first.locator(".span-row").evaluate_all(
            "rows => rows.map(r => r.dataset.depth)"
        )
    ]
    assert depths[0] == 0 and max(depths) >= 2
    call_row = first.locator(".span-row:has(.span-ttft)")
    assert call_row.count() == 1
    assert "tok" in call_row.text_content() and "$" in call_row.text_content()
    assert (
        first.locator("h3 a")
        .get_attribute("href")
        .endswith(first.get_attribute("data-trace"))
    )
    screenshot(page, "conversation")


def test_a_script_in_a_preview_is_shown_as_text(dashboard, mesh, page):
    conversation = mesh.injected_conversation
    _sign_in(page, dashboard, "conversations")
    row = page.locator(f"tr[data-conversation='{conversation}'] td.preview")
    assert "<script>window.__pwned = 1</script>" in row.text_content()

    page.goto(f"{dashboard.url}#conversation/{conversation}")
    page.wait_for_selector(
        f"body[data-rendered='conversation/{conversation}']",
        timeout=_RENDER_TIMEOUT_MS,
    )
    prompt = page.locator(".prompt-preview").first.text_content()
    assert INJECTED[:20] in prompt
    assert "jane.doe@example.com" not in prompt  # redacted before export
    assert page.locator("#waterfall script, #waterfall img").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert "email" in page.locator(".badge.pii").first.text_content()
    assert page.js_errors == []
    screenshot(page, "injected-preview")


def test_evaluation_view_lists_runs_with_reports_and_index_history(
    dashboard, mesh, page
):
    _sign_in(page, dashboard, "evaluation")
    assert page.locator("#runs .run").count() == len(mesh.runs)
    newest = page.locator(f".run[data-run='{mesh.runs[-1]}']")
    assert newest.locator("tr[data-arm]").count() == 4  # 2 models x off/on
    assert "κ" in newest.locator(".agreement").text_content()

    href = newest.locator("a.pdf-link").get_attribute("href")
    response = page.request.get(dashboard.url.rstrip("/") + href)
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.body() == mesh.pdf

    with psycopg.connect(mesh.database_url) as conn:
        (points,) = conn.execute(
            "SELECT count(*) FROM underwriter_model_indexes"
            " WHERE tenant = %s AND model = 'sim/careful'",
            (TENANT,),
        ).fetchone()
    page.select_option("#history-model", "sim/careful")
    page.wait_for_function(
        f"document.querySelectorAll('#history-table tbody tr').length === {points}"
    )
    assert page.locator("#chart-history canvas").count() == 1
    screenshot(page, "evaluation")


def test_another_tenant_sees_none_of_the_data(dashboard, mesh):
    headers = {"Authorization": f"Bearer {OTHER_KEY}"}
    status, _, body = _get(dashboard.url + "api/conversations?window=1h", headers)
    assert status == 200 and json.loads(body)["conversations"] == []
    status, _, _ = _get(f"{dashboard.url}api/runs/{mesh.runs[0]}/report.pdf", headers)
    assert status == 404
    status, _, _ = _get(
        f"{dashboard.url}api/conversations/{mesh.conversations[0]}", headers
    )
    assert status == 404
