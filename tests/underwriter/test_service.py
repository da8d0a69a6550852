"""EvaluationService over real gRPC, through the real router, with runs in
real Postgres."""

import contextlib
import json
import subprocess

import grpc
import pytest

from koverage.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc
from koverage.serving import connect
from koverage.settings import Settings
from services.router import build_server as build_router_server
from services.underwriter._app import build_server
from tests.engines import fresh_database

pytestmark = pytest.mark.integration

_KEYS = "key-a=alpha,key-b=beta"


@contextlib.asynccontextmanager
async def mesh(tmp_path):
    with fresh_database("koverage_test_underwriter") as url:
        base = dict(
            metrics_port=-1,
            api_keys=_KEYS,
            auth_required=True,
            client_api_key="key-a",
            database_url=url,
            run_dir=str(tmp_path),
            shutdown_grace_s=0.5,
        )
        router = build_router_server(
            Settings.from_env({}, router_address="127.0.0.1:0", **base)
        )
        await router.start()
        underwriter = await build_server(
            Settings.from_env(
                {},
                underwriter_address="127.0.0.1:0",
                router_address=router.address,
                **base,
            )
        )
        await underwriter.start()
        try:
            yield underwriter.address
        finally:
            await underwriter.stop(0.5)
            await router.stop(0.5)


def spec(**fields) -> evaluation_pb2.RunSpec:
    values = dict(
        models=["sim/fast"],
        judges=["sim/fast", "sim/steady"],
        suites=["hallucination", "bias"],
        items_per_suite=3,
        seed=5,
    )
    values.update(fields)
    return evaluation_pb2.RunSpec(**values)


async def run_to_end(stub, run_spec) -> list:
    events = []
    async for event in stub.StartRun(
        evaluation_pb2.StartRunRequest(spec=run_spec), timeout=120
    ):
        events.append(event)
    return events


async def test_run_streams_progress_then_is_stored_with_scorecard_and_pdf(tmp_path):
    async with mesh(tmp_path) as address, connect(address, api_key="key-a") as channel:
        stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
        events = await run_to_end(stub, spec())
        started, finished = events[0].started, events[-1].finished
        assert started.total_calls > 0
        progress = [e.progress for e in events if e.HasField("progress")]
        assert progress[-1].completed_calls == started.total_calls
        assert finished.summary.state == evaluation_pb2.RUN_STATE_SUCCEEDED
        assert {i.guardrail_arm for i in finished.summary.indexes} == {"off", "on"}
        assert all(i.simulated for i in finished.summary.indexes)

        got = await stub.GetRun(
            evaluation_pb2.GetRunRequest(run_id=started.run_id), timeout=10
        )
        assert got.run.spec.models == ["sim/fast"]
        scorecard = json.loads(
            (
                await stub.GetScorecard(
                    evaluation_pb2.GetScorecardRequest(run_id=started.run_id),
                    timeout=10,
                )
            ).scorecard_json
        )
        assert scorecard["run_id"] == started.run_id
        assert scorecard["manifest"]["simulated"] is True
        pdf = b"".join(
            [
                c.chunk
                async for c in stub.StreamReport(
                    evaluation_pb2.StreamReportRequest(run_id=started.run_id),
                    timeout=30,
                )
            ]
        )
    assert pdf.startswith(b"%PDF")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    info = subprocess.run(
        ["pdfinfo", str(path)], capture_output=True, text=True, check=True
    )
    assert "Pages:           1" in info.stdout


async def test_runs_list_newest_first_compare_and_stay_in_their_tenant(tmp_path):
    async with mesh(tmp_path) as address:
        async with connect(address, api_key="key-a") as channel:
            stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
            first = (await run_to_end(stub, spec(seed=1)))[0].started.run_id
            second = (await run_to_end(stub, spec(seed=2)))[0].started.run_id
            page = await stub.ListRuns(
                evaluation_pb2.ListRunsRequest(page_size=1), timeout=10
            )
            assert [r.run_id for r in page.runs] == [second]
            rest = await stub.ListRuns(
                evaluation_pb2.ListRunsRequest(
                    page_size=1, page_token=page.next_page_token
                ),
                timeout=10,
            )
            assert [r.run_id for r in rest.runs] == [first]
            compared = await stub.CompareRuns(
                evaluation_pb2.CompareRunsRequest(run_ids=[first, second]), timeout=10
            )
            assert [r.run_id for r in compared.runs] == [first, second]
        async with connect(address, api_key="key-b") as channel:
            other = evaluation_pb2_grpc.EvaluationServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await other.GetRun(
                    evaluation_pb2.GetRunRequest(run_id=first), timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            listed = await other.ListRuns(evaluation_pb2.ListRunsRequest(), timeout=10)
            assert list(listed.runs) == []


@pytest.mark.parametrize(
    ("run_spec", "code"),
    [
        (spec(models=[]), grpc.StatusCode.INVALID_ARGUMENT),
        (spec(models=["no/such"]), grpc.StatusCode.NOT_FOUND),
        (spec(judges=["sim/fast"]), grpc.StatusCode.INVALID_ARGUMENT),
        # Two real judges from one vendor (simulated ones are exempt).
        (
            spec(judges=["openai/gpt-4.1", "openai/gpt-4.1-mini"]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (spec(suites=["astrology"]), grpc.StatusCode.INVALID_ARGUMENT),
        (spec(temperatures=[5.0]), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_bad_run_specs_get_their_status(tmp_path, run_spec, code):
    async with mesh(tmp_path) as address, connect(address, api_key="key-a") as channel:
        stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await run_to_end(stub, run_spec)
        listed = await stub.ListRuns(evaluation_pb2.ListRunsRequest(), timeout=10)
    assert caught.value.code() == code
    assert list(listed.runs) == []


async def test_malformed_and_unknown_run_ids(tmp_path):
    async with mesh(tmp_path) as address, connect(address, api_key="key-a") as channel:
        stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await stub.GetRun(
                evaluation_pb2.GetRunRequest(run_id="not-a-uuid"), timeout=10
            )
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.GetScorecard(
                evaluation_pb2.GetScorecardRequest(
                    run_id="00000000-0000-0000-0000-000000000000"
                ),
                timeout=10,
            )
        with pytest.raises(grpc.aio.AioRpcError) as few:
            await stub.CompareRuns(
                evaluation_pb2.CompareRunsRequest(run_ids=["x"]), timeout=10
            )
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert few.value.code() == grpc.StatusCode.INVALID_ARGUMENT
