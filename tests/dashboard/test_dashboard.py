"""End-to-end: the dashboard in headless Chromium over a live mesh's data."""

import datetime
import json
import urllib.error
import urllib.request
from decimal import ROUND_HALF_UP, Decimal

import prometheus_client
import psycopg
import pytest

from tests.dashboard.conftest import (
    ACME,
    ACME_AGES_MIN,
    API_KEY,
    DROPPED_SAMPLE,
    INJECTED,
    OTHER_KEY,
    REJECTED_SAMPLE,
    TENANT,
    chat_once,
    counter_value,
    screenshot,
    wait_for_calls,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_RENDER_TIMEOUT_MS = 15_000
# The page refreshes every 5 s; a new call needs one refresh to show.
_REFRESH_TIMEOUT_MS = 20_000
_WINDOW_MINUTES = {"15m": 15, "1h": 60, "24h": 24 * 60, "7d": 7 * 24 * 60}


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


def _pct(part: int, whole: int) -> str:
    """The page's rate format (dashboard.js `pct`)."""
    return f"{100 * (part / whole if whole else 0.0):.2f}%"


def _fixed(value: float, digits: int) -> str:
    """JavaScript's `Number.prototype.toFixed`: the exact binary value rounded
    half away from zero (Python's format rounds a tie such as 87.25 to even)."""
    exact = Decimal(value)
    return str(exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _usd(value: Decimal) -> str:
    """The page's cost format: the server's normalized decimal text."""
    return "$" + (format(value.normalize(), "f") if value else "0")


def _wait_for_text(page, element_id: str, text: str, timeout_ms: int) -> None:
    page.wait_for_function(
        "([id, text]) => document.getElementById(id).textContent === text",
        arg=[element_id, text],
        timeout=timeout_ms,
    )


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
    # The mesh's traffic holds a declared provider failure and a guardrail
    # refusal, so neither rate can pass as zero by accident.
    assert calls >= 5 and errors >= 1 and refused == 1
    assert page.text_content("#calls-total") == str(calls)
    for i, p in enumerate(("p50", "p95", "p99")):
        assert page.text_content(f"#latency-{p}") == f"{latency[i]:.1f} ms"
        assert page.text_content(f"#ttft-{p}") == f"{ttft[i]:.1f} ms"
    assert page.text_content("#error-count") == f"{errors} errors"
    assert page.text_content("#refusal-count") == f"{refused} refused"
    assert page.text_content("#error-rate") == _pct(errors, calls)
    assert page.text_content("#refusal-rate") == _pct(refused, calls)

    # The charts drew the same calls, bucket by bucket.
    chart_calls = page.evaluate(
        "window.koverageCharts['chart-throughput'].data[1].reduce((a, b) => a + b, 0)"
    )
    assert chart_calls == calls
    chart_errors, chart_refused = page.evaluate(
        "window.koverageCharts['chart-errors'].data.slice(1)"
        ".map(s => s.reduce((a, b) => a + b, 0))"
    )
    assert (chart_errors, chart_refused) == (errors, refused)
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


def test_live_view_shows_the_spans_lost_on_the_way(dashboard, mesh, page):
    # Ingest refused the unredacted span the collector forwarded, and the
    # router with no collector dropped its spans: both counted on /metrics,
    # which the dashboard scrapes.
    rejected = counter_value(
        mesh.metrics_urls["ingest"], REJECTED_SAMPLE, tenant=TENANT
    )
    assert rejected >= mesh.rejected_spans >= 1
    lost = counter_value(
        mesh.metrics_urls["lost"], DROPPED_SAMPLE, reason="export_failed"
    )
    assert lost >= 1
    _sign_in(page, dashboard)

    # The page adds every scraped process and this one (the dashboard reads
    # its own registry in process, where other test modules may count some).
    dropped = sum(counter_value(u, DROPPED_SAMPLE) for u in mesh.metrics_urls.values())
    assert page.text_content("#dropped-total") == str(
        int(dropped + _local(DROPPED_SAMPLE))
    )
    assert page.text_content("#ingest-rejected") == str(
        int(rejected + _local(REJECTED_SAMPLE, tenant=TENANT))
    )
    assert "lossy" in page.get_attribute("#drops-tile", "class")
    rows = page.locator("#drops-table tbody tr").all_text_contents()
    assert any(
        r.startswith("all processes readdropped before export: export_failed")
        for r in rows
    )
    for url in mesh.metrics_urls.values():
        assert f"{url}scrapeok" in rows
    assert page.js_errors == []


def _local(sample_name: str, **labels: str) -> float:
    """This process's own `sample_name` samples carrying `labels`."""
    return sum(
        sample.value
        for family in prometheus_client.REGISTRY.collect()
        for sample in family.samples
        if sample.name == sample_name
        and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_conversation_waterfall_shows_its_spans_in_order(dashboard, mesh, page):
    conversation = mesh.conversations[0]  # two turns: two traces
    _sign_in(page, dashboard, "conversations")
    page.click(f"tr[data-conversation='{conversation}']")
    page.wait_for_selector(
        f"body[data-rendered='conversation/{conversation}']",
        timeout=_RENDER_TIMEOUT_MS,
    )

    # Turns top to bottom in the order they happened (each trace by its
    # first span), spans within a trace by start time.
    with psycopg.connect(mesh.database_url) as conn:
        expected = conn.execute(
            "SELECT encode(trace_id, 'hex'), encode(span_id, 'hex') FROM spans"
            " WHERE tenant = %s AND trace_id IN (SELECT trace_id FROM llm_calls"
            "   WHERE conversation_id = %s)"
            " ORDER BY min(start_time) OVER (PARTITION BY trace_id), start_time,"
            "   span_id",
            (TENANT, conversation),
        ).fetchall()
    traces = page.locator("#waterfall .trace")
    trace_ids = [trace.get_attribute("data-trace") for trace in traces.all()]
    assert len(trace_ids) == len({t for t, _ in expected}) == 2
    shown = [
        (trace.get_attribute("data-trace"), row.get_attribute("data-span"))
        for trace in traces.all()
        for row in trace.locator(".span-row").all()
    ]
    assert shown == expected
    # The turns' trace ids were chosen so that id order is the reverse of
    # time order: the first turn's id starts f0, the second's 0f.
    assert [t[:2] for t in trace_ids] == ["f0", "0f"]
    assert trace_ids != sorted(trace_ids)

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
    assert page.js_errors == []
    screenshot(page, "injected-preview")


def test_pii_badges_show_the_stored_redaction_counts(dashboard, mesh, page):
    conversation = mesh.injected_conversation
    _sign_in(page, dashboard, "conversations")
    page.goto(f"{dashboard.url}#conversation/{conversation}")
    page.wait_for_selector(
        f"body[data-rendered='conversation/{conversation}']",
        timeout=_RENDER_TIMEOUT_MS,
    )
    (counts,) = _fetch_one(
        mesh.database_url,
        "SELECT redaction_counts FROM llm_calls"
        " WHERE tenant = %s AND conversation_id = %s",
        (TENANT, conversation),
    )
    # Two addresses were planted in the prompt.
    assert counts["email"] == 2
    badges = page.locator(".span-row .badge.pii").all_text_contents()
    assert badges == [f"{kind} ×{n}" for kind, n in counts.items() if n > 0]
    assert "email ×2" in badges


def test_conversations_list_shows_errors_and_refusals(dashboard, mesh, page):
    _sign_in(page, dashboard, "conversations")
    with psycopg.connect(mesh.database_url) as conn:
        stored = conn.execute(
            "SELECT conversation_id, count(*) FILTER (WHERE status = 'error'),"
            " count(*) FILTER (WHERE status = 'refused') FROM llm_calls"
            " WHERE tenant = %s AND conversation_id = ANY(%s) GROUP BY 1",
            (TENANT, mesh.conversations),
        ).fetchall()
    stored = {conversation: (e, r) for conversation, e, r in stored}
    assert stored[mesh.failed_conversation][0] >= 1
    assert stored[mesh.refused_conversation] == (0, 1)
    for conversation, (errors, refused) in stored.items():
        cells = page.locator(
            f"tr[data-conversation='{conversation}'] td"
        ).all_text_contents()
        assert cells[5:7] == [str(errors), str(refused)], conversation
    screenshot(page, "conversations")

    # The failed call's span row carries the error status.
    page.click(f"tr[data-conversation='{mesh.failed_conversation}']")
    page.wait_for_selector(
        f"body[data-rendered='conversation/{mesh.failed_conversation}']",
        timeout=_RENDER_TIMEOUT_MS,
    )
    statuses = page.locator(".span-row .badge.error").all_text_contents()
    assert statuses.count("error") >= stored[mesh.failed_conversation][0]
    assert page.js_errors == []


def test_live_view_refreshes_with_new_traffic_without_a_reload(dashboard, mesh, page):
    _sign_in(page, dashboard)
    before = int(page.text_content("#calls-total"))
    page.evaluate("window.__same_document = true")

    conversation = chat_once(mesh, "One more turn, for the refresh.")
    wait_for_calls(mesh.database_url, [conversation])
    (after,) = _fetch_one(
        mesh.database_url,
        "SELECT count(*) FROM llm_calls WHERE tenant = %s",
        (TENANT,),
    )
    assert after == before + 1
    _wait_for_text(page, "calls-total", str(after), _REFRESH_TIMEOUT_MS)
    assert page.evaluate("window.__same_document") is True  # no reload
    assert page.js_errors == []


def test_window_and_tenant_switches_change_the_numbers(open_dashboard, mesh, page):
    page.goto(open_dashboard.url)
    page.wait_for_selector("body[data-rendered='live']", timeout=_RENDER_TIMEOUT_MS)
    assert page.locator("#tenant-select").is_visible()
    page.select_option("#tenant-select", ACME)

    # acme has one call in each window's reach: 1, 2, 3, 4 calls as it widens.
    expected = []
    with psycopg.connect(mesh.database_url) as conn:
        for name, minutes in _WINDOW_MINUTES.items():
            since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(
                minutes=minutes
            )
            calls, cost = conn.execute(
                "SELECT count(*), coalesce(sum(cost_usd), 0) FROM llm_calls"
                " WHERE tenant = %s AND start_time >= %s",
                (ACME, since),
            ).fetchone()
            expected.append((name, calls, cost))
    assert [calls for _, calls, _ in expected] == [1, 2, 3, 4]
    assert len(ACME_AGES_MIN) == 4
    for name, calls, cost in expected:
        page.click(f"#windows button[data-window='{name}']")
        _wait_for_text(page, "calls-total", str(calls), _RENDER_TIMEOUT_MS)
        assert page.text_content("#total-cost") == _usd(cost), name
        rows = page.locator("#cost-table tbody tr[data-model]").count()
        assert rows == 1

    # Back to the default tenant, still on 7 d: the mesh's own traffic.
    (default_calls,) = _fetch_one(
        mesh.database_url,
        "SELECT count(*) FROM llm_calls WHERE tenant = %s",
        (TENANT,),
    )
    page.select_option("#tenant-select", TENANT)
    _wait_for_text(page, "calls-total", str(default_calls), _RENDER_TIMEOUT_MS)
    assert default_calls != 4
    assert page.js_errors == []
    screenshot(page, "live-tenant-switch")


def test_evaluation_view_lists_runs_with_reports_and_index_history(
    dashboard, mesh, page
):
    _sign_in(page, dashboard, "evaluation")
    assert page.locator("#runs .run").count() == len(mesh.runs)
    newest = page.locator(f".run[data-run='{mesh.runs[-1]}']")
    assert newest.locator("tr[data-arm]").count() == 4  # 2 models x off/on
    assert "κ" in newest.locator(".agreement").text_content()

    # Index, CI, tier and per-axis risk as the stored scorecard holds them.
    (scorecard,) = _fetch_one(
        mesh.database_url,
        "SELECT scorecard FROM underwriter_runs WHERE id = %s",
        (mesh.runs[-1],),
    )
    for entry in scorecard["entries"]:
        for arm, summary in entry["arms"].items():
            row = newest.locator(f"tr[data-model='{entry['model']}'][data-arm='{arm}']")
            low, high = summary["index_ci"]
            assert row.locator("td.index").text_content() == (
                f"{_fixed(summary['index'], 1)} [{_fixed(low, 1)}, {_fixed(high, 1)}]"
            )
            tier = summary["tier"] + (
                " (uncertain)" if summary["tier_uncertain"] else ""
            )
            assert row.locator("td.tier").text_content() == tier
            for axis, a in summary["axes"].items():
                assert row.locator(
                    f"td.axes div[data-axis='{axis}']"
                ).text_content() == (
                    f"{axis}: {_fixed(a['risk'], 3)} [{_fixed(a['ci'][0], 3)},"
                    f" {_fixed(a['ci'][1], 3)}]"
                    f" n={a['n']}"
                )

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
