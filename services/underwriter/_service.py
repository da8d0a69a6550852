"""EvaluationService: runs the exam through the router and keeps each run.

A run executes in its own task: closing the StartRun stream does not stop
it, and GetRun follows it. The scorecard and the one-page PDF are stored in
Postgres when the run finishes.
"""

import asyncio
import json
import logging
import pathlib
import uuid

from google.protobuf import json_format

from koverage.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from koverage.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc
from koverage.router.v1 import router_pb2, router_pb2_grpc
from koverage.serving import current_tenant
from services.underwriter._runner import EvalRunner, Progress
from services.underwriter._store import RunStore, StoredRun
from services.underwriter.report import render_report

logger = logging.getLogger(__name__)

_PDF_CHUNK_BYTES = 64 * 1024
_DEFAULT_PAGE_SIZE = 20
_MAX_PAGE_SIZE = 100
_STATES = {
    "running": evaluation_pb2.RUN_STATE_RUNNING,
    "succeeded": evaluation_pb2.RUN_STATE_SUCCEEDED,
    "failed": evaluation_pb2.RUN_STATE_FAILED,
}


class EvaluationServicer(evaluation_pb2_grpc.EvaluationServiceServicer):
    """Starts, follows and reports evaluation runs."""

    def __init__(
        self, store: RunStore, generate, router_channel, work_dir: pathlib.Path
    ) -> None:
        self._store = store
        self._generate = generate
        self._router = router_pb2_grpc.RouterServiceStub(router_channel)
        self._work_dir = work_dir
        self._tasks: set[asyncio.Task] = set()

    async def StartRun(self, request, context):
        spec = request.spec
        catalog = await self._catalog()
        for model in [*spec.models, *spec.judges]:
            if model not in catalog:
                raise NotFoundError(f"model {model!r} is not in the router's catalog")
        tenant = current_tenant()
        events: asyncio.Queue = asyncio.Queue()
        run_id = str(uuid.uuid4())
        runner = EvalRunner(
            self._generate,
            run_id=run_id,
            models=list(spec.models),
            judges=list(spec.judges),
            output_dir=self._work_dir / run_id,
            suites=list(spec.suites),
            items_per_suite=spec.items_per_suite or 50,
            temperatures=list(spec.temperatures) or [0.0],
            guardrail_arms=list(spec.guardrail_arms) or ["off", "on"],
            seed=spec.seed,
            concurrency=spec.concurrency or 16,
            simulated_models=[m for m in spec.models if catalog[m].simulated],
            simulated_judges=[j for j in spec.judges if catalog[j].simulated],
            on_progress=events.put_nowait,
        )
        await self._store.create(tenant, runner.run_id, json_format.MessageToDict(spec))
        task = asyncio.create_task(self._execute(runner, events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        yield evaluation_pb2.StartRunResponse(
            started=evaluation_pb2.RunStarted(
                run_id=runner.run_id, total_calls=runner.total_calls
            )
        )
        while True:
            event = await events.get()
            if isinstance(event, Progress):
                yield evaluation_pb2.StartRunResponse(
                    progress=evaluation_pb2.RunProgress(
                        completed_calls=event.completed_calls,
                        failed_calls=event.failed_calls,
                        total_calls=event.total_calls,
                    )
                )
            else:
                run = await self._store.get(tenant, runner.run_id)
                yield evaluation_pb2.StartRunResponse(
                    finished=evaluation_pb2.RunFinished(summary=_summary(run))
                )
                return

    async def GetRun(self, request, context):
        run = await self._store.get(current_tenant(), request.run_id)
        return evaluation_pb2.GetRunResponse(run=_summary(run))

    async def ListRuns(self, request, context):
        page_size = request.page_size or _DEFAULT_PAGE_SIZE
        if page_size > _MAX_PAGE_SIZE:
            raise InvalidArgumentError(
                f"page_size={page_size}; at most {_MAX_PAGE_SIZE}", field="page_size"
            )
        runs, token = await self._store.list(
            current_tenant(), page_size, request.page_token
        )
        return evaluation_pb2.ListRunsResponse(
            runs=[_summary(r) for r in runs], next_page_token=token
        )

    async def CompareRuns(self, request, context):
        if len(request.run_ids) < 2:
            raise InvalidArgumentError(
                "name at least two run_ids to compare", field="run_ids"
            )
        tenant = current_tenant()
        runs = [await self._store.get(tenant, run_id) for run_id in request.run_ids]
        return evaluation_pb2.CompareRunsResponse(runs=[_summary(r) for r in runs])

    async def GetScorecard(self, request, context):
        run = await self._finished(request.run_id)
        return evaluation_pb2.GetScorecardResponse(
            scorecard_json=json.dumps(run.scorecard)
        )

    async def StreamReport(self, request, context):
        await self._finished(request.run_id)
        pdf = await self._store.report_pdf(current_tenant(), request.run_id)
        for start in range(0, len(pdf), _PDF_CHUNK_BYTES):
            yield evaluation_pb2.StreamReportResponse(
                chunk=pdf[start : start + _PDF_CHUNK_BYTES]
            )

    async def _finished(self, run_id: str) -> StoredRun:
        run = await self._store.get(current_tenant(), run_id)
        if run.state != "succeeded":
            raise FailedPreconditionError(
                f"run {run_id} is {run.state}; its scorecard and report exist once it succeeds"
            )
        return run

    async def _catalog(self) -> dict:
        response = await self._router.ListModels(
            router_pb2.ListModelsRequest(), timeout=10
        )
        return {m.id: m for m in response.models}

    async def _execute(self, runner: EvalRunner, events: asyncio.Queue) -> None:
        try:
            scorecard = await runner.run()
            pdf = await asyncio.to_thread(render_report, scorecard)
            await self._store.finish(runner.run_id, scorecard, pdf)
        except Exception as exc:
            logger.exception("run failed", extra={"run_id": runner.run_id})
            await self._store.fail(runner.run_id, f"{type(exc).__name__}: {exc}")
        finally:
            events.put_nowait(None)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _summary(run: StoredRun) -> evaluation_pb2.RunSummary:
    summary = evaluation_pb2.RunSummary(
        run_id=run.id,
        state=_STATES[run.state],
        spec=json_format.ParseDict(run.spec, evaluation_pb2.RunSpec()),
        error=run.error,
    )
    summary.create_time.FromDatetime(run.created_at)
    if run.finished_at is not None:
        summary.finish_time.FromDatetime(run.finished_at)
    for entry in (run.scorecard or {}).get("entries", []):
        for arm, result in entry["arms"].items():
            # An arm with no scorable answer has no index: NaN says so.
            low, high = result.get("index_ci") or (None, None)
            summary.indexes.add(
                model=entry["model"],
                guardrail_arm=arm,
                index=_number(result.get("index")),
                index_ci_low=_number(low),
                index_ci_high=_number(high),
                tier=result["tier"],
                tier_uncertain=result["tier_uncertain"],
                simulated=entry.get("simulated", False),
            )
    return summary
