"""A live local mesh with real chat traffic, the dashboard over its database,
and headless Chromium to look at it.

The mesh is the services `koverage up` runs (Tansu, ingest, Rotel, worker,
router, chat) on a fresh database; traffic goes through the chat
service, so every span row on the page travelled router -> collector ->
ingest -> Kafka -> worker -> Postgres. Evaluation runs are written through
the underwriter's own `RunStore` with a schema-conformant scorecard (a
real evaluation run would take minutes).
"""

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import threading
import time
import uuid

import psycopg
import pytest

from koverage.chat.v1 import chat_pb2, chat_pb2_grpc
from koverage.db import migrate, open_async_pool
from koverage.local import (
    RotelCollector,
    Supervisor,
    TansuBroker,
    ensure_topics,
    free_port,
    start_service,
)
from koverage.serving import connect
from koverage.settings import Settings
from tests.engines import fresh_database

CHROMIUM = "/usr/bin/chromium"
API_KEY = "kov_dashboard_test_key"
OTHER_KEY = "kov_dashboard_other_key"
TENANT = "default"
INJECTED = "<script>window.__pwned = 1</script><img src=x onerror=window.__pwned=2>"
ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"

_SERVICES = ("ingest", "worker", "router", "chat")
_SPANS_TIMEOUT_S = 60.0


@dataclasses.dataclass
class Mesh:
    database_url: str
    chat_address: str
    conversations: list[str]
    injected_conversation: str
    runs: list[str]
    pdf: bytes


@dataclasses.dataclass
class Dashboard:
    url: str
    port: int


def _require_browser() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed: pip install playwright")


@pytest.fixture(scope="package")
def mesh(tmp_path_factory):
    _require_browser()
    run_dir = tmp_path_factory.mktemp("koverage-mesh")
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_database("koverage_test_dashboard"))
        state = stack.enter_context(_local_mesh(database_url, run_dir))
        mesh = asyncio.run(_drive_traffic(database_url, state))
        _wait_for_spans(database_url, mesh.conversations)
        yield mesh


@pytest.fixture(scope="package")
def dashboard(mesh):
    """The dashboard in a thread of its own event loop, against the mesh's DB."""
    from services.worker.dashboard import start_dashboard

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    settings = Settings.from_env({})
    server = asyncio.run_coroutine_threadsafe(
        start_dashboard(
            settings,
            mesh.database_url,
            host="127.0.0.1",
            port=0,
            api_keys={API_KEY: TENANT, OTHER_KEY: "other"},
            auth_required=True,
            trace_url_template="http://jaeger.invalid/trace/{trace_id}",
        ),
        loop,
    ).result(30)
    try:
        yield Dashboard(server.url, server.port)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="package")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    try:
        yield page
    finally:
        context.close()


@contextlib.contextmanager
def _local_mesh(database_url: str, run_dir: pathlib.Path):
    """Tansu, ingest, Rotel, worker, router and chat, as `koverage up` runs them.

    One difference: ingest accepts spans without a key. Rotel forwards
    without an `authorization` header, so an ingest that requires keys (as
    `koverage up` configures it today) refuses every span the collector
    sends; spans then land under the `default` tenant, which is why the
    dashboard's test key names that tenant.
    """
    with Supervisor(run_dir / "logs") as supervisor:
        bootstrap = TansuBroker(supervisor=supervisor).start()
        settings = Settings()
        ensure_topics(
            bootstrap,
            {settings.kafka_spans_topic: 2, settings.kafka_dead_letter_topic: 1},
        )
        services = {name: f"127.0.0.1:{free_port('127.0.0.1')}" for name in _SERVICES}
        env = {
            "KOVERAGE_DATABASE_URL": database_url,
            "KOVERAGE_KAFKA_BOOTSTRAP": bootstrap,
            "KOVERAGE_KAFKA_SPANS_PARTITIONS": "2",
            "KOVERAGE_API_KEYS": f"{API_KEY}={TENANT}",
            "KOVERAGE_AUTH_REQUIRED": "true",
            "KOVERAGE_CLIENT_API_KEY": API_KEY,
            "KOVERAGE_LOG_LEVEL": "WARNING",
            **{f"KOVERAGE_{n.upper()}_ADDRESS": a for n, a in services.items()},
        }
        start_service(
            supervisor,
            "ingest",
            services["ingest"],
            env={**env, "KOVERAGE_AUTH_REQUIRED": "false"},
        )
        otlp = RotelCollector(services["ingest"], supervisor=supervisor).start()
        start_service(supervisor, "worker", services["worker"], env=env)
        traced = {**env, "KOVERAGE_OTLP_ENDPOINT": otlp}
        for name in ("router", "chat"):
            start_service(supervisor, name, services[name], env=traced)
        yield {"services": services}


async def _drive_traffic(database_url: str, state: dict) -> Mesh:
    chat = state["services"]["chat"]
    conversations = []
    async with connect(chat, api_key=API_KEY) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)

        # A two-turn conversation, a fast model, one with a planted email and
        # a script tag in the prompt, and a guardrailed request.
        first = await _chat(stub, "Hello, dashboard. How are you?")
        await _chat(stub, "And a second turn, please.", conversation_id=first)
        conversations.append(first)
        conversations.append(
            await _chat(stub, "Say something quick.", model="sim/fast")
        )
        injected = await _chat(
            stub, f"{INJECTED} reach me at jane.doe@example.com please"
        )
        conversations.append(injected)
        conversations.append(
            await _chat(stub, "Tell me a fact about owls.", guardrail=True)
        )

    runs, pdf = await _store_runs(database_url)
    return Mesh(database_url, chat, conversations, injected, runs, pdf)


async def _chat(stub, content: str, *, conversation_id: str = "", **fields) -> str:
    request = chat_pb2.StreamChatRequest(
        content=content, conversation_id=conversation_id, **fields
    )
    async for event in stub.StreamChat(request, timeout=30):
        if event.WhichOneof("event") == "started":
            conversation_id = event.started.conversation_id
    return conversation_id


async def _store_runs(database_url: str) -> tuple[list[str], bytes]:
    """Two succeeded runs through the underwriter's RunStore (its write path)."""
    from services.underwriter._app import MIGRATIONS_DIR
    from services.underwriter._store import RunStore
    from tests.underwriter.scorecard_fixtures import build_scorecard

    await asyncio.to_thread(
        migrate, database_url, owner="underwriter", directory=MIGRATIONS_DIR
    )
    pdf = b"%PDF-1.4\n% koverage dashboard test report\n%%EOF\n"
    pool = await open_async_pool(database_url, min_size=1, max_size=1)
    runs = []
    try:
        store = RunStore(pool)
        for i, models in enumerate(
            (("sim/careful",), ("sim/careful", "sim/leaky-secrets"))
        ):
            run_id = str(uuid.uuid4())
            await store.create(TENANT, run_id, {"models": list(models)})
            scorecard = build_scorecard(models=models, run_id=run_id, seed=7 + i)
            await store.finish(run_id, scorecard, pdf)
            runs.append(run_id)
            await asyncio.sleep(0.01)  # distinct created_at
    finally:
        await pool.close()
    return runs, pdf


def _wait_for_spans(database_url: str, conversations: list[str]) -> None:
    """Waits until every conversation's calls reached Postgres (the pipeline
    is asynchronous: batch export, Kafka, the worker's batch write)."""
    deadline = time.monotonic() + _SPANS_TIMEOUT_S
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            (seen,) = conn.execute(
                "SELECT count(DISTINCT conversation_id) FROM llm_calls "
                "WHERE tenant = %s AND conversation_id = ANY(%s)",
                (TENANT, conversations),
            ).fetchone()
            (router_spans,) = conn.execute(
                "SELECT count(*) FROM spans WHERE tenant = %s", (TENANT,)
            ).fetchone()
            if seen == len(conversations):
                # Let the rest of the last traces (chat server spans) land.
                time.sleep(2.0)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {seen}/{len(conversations)} conversations and "
                    f"{router_spans} spans reached Postgres in {_SPANS_TIMEOUT_S} s"
                )
            time.sleep(0.5)


def screenshot(page, name: str) -> pathlib.Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
