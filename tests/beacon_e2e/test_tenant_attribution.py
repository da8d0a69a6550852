"""Behind one shared collector, each caller's spans land in the caller's tenant."""

import asyncio
import time

from koverage.db import connect
from koverage.local import RotelCollector
from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import connect as grpc_connect
from tests.beacon_e2e.conftest import router_process, running_pipeline

_KEYS = "k-relay=mesh-collector,k-acme=acme,k-beta=beta"


def _tenants(database_url: str, trace_id: bytes) -> tuple[list, list]:
    with connect(database_url) as conn:
        spans = conn.execute(
            "SELECT name, tenant FROM spans WHERE trace_id = %s ORDER BY name",
            (trace_id,),
        ).fetchall()
        calls = conn.execute(
            "SELECT tenant FROM llm_calls WHERE trace_id = %s", (trace_id,)
        ).fetchall()
    return spans, calls


async def _generate(router_address: str, api_key: str) -> bytes:
    channel = grpc_connect(router_address, api_key=api_key)
    async with channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        summary = None
        async for event in stub.Generate(
            router_pb2.GenerateRequest(
                model="sim/steady",
                messages=[
                    router_pb2.ChatMessage(role=router_pb2.ROLE_USER, content="hi")
                ],
            ),
            timeout=20,
        ):
            if event.HasField("summary"):
                summary = event.summary
    return bytes.fromhex(summary.trace_id)


async def _wait_for_trace(database_url: str, trace_id: bytes, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while True:
        spans, calls = await asyncio.to_thread(_tenants, database_url, trace_id)
        if len(spans) >= 2 and calls:
            return spans, calls
        assert time.monotonic() < deadline, f"trace {trace_id.hex()} never landed"
        await asyncio.sleep(0.2)


async def test_shared_collector_keeps_each_callers_tenant(
    kafka_bootstrap, database_url, tmp_path
):
    async with running_pipeline(
        kafka_bootstrap,
        database_url,
        api_keys=_KEYS,
        auth_required=True,
        ingest_trusted_tenants="mesh-collector",
    ) as pipeline:
        collector = RotelCollector(
            pipeline.ingest_address,
            run_dir=tmp_path,
            export_headers={"authorization": "Bearer k-relay"},
        )
        with (
            collector,
            router_process(
                collector.grpc_endpoint,
                KOVERAGE_API_KEYS=_KEYS,
                KOVERAGE_AUTH_REQUIRED="true",
            ) as router_address,
        ):
            acme_trace = await _generate(router_address, "k-acme")
            beta_trace = await _generate(router_address, "k-beta")
            acme = await _wait_for_trace(database_url, acme_trace)
            beta = await _wait_for_trace(database_url, beta_trace)

    for (spans, calls), tenant in ((acme, "acme"), (beta, "beta")):
        # The router's server span and its model-call span, both attributed.
        assert {name for name, _ in spans} >= {
            "koverage.router.v1.RouterService/Generate",
            "chat sim/steady",
        }
        assert {t for _, t in spans} == {tenant}
        assert calls == [(tenant,)]
