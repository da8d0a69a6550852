"""The server interceptor every Koverage server runs.

For each RPC it authenticates the caller, continues the caller's trace in a
SERVER span, counts the outcome in Prometheus, and translates our errors into
status codes in one place. It wraps the handlers itself rather than relying
on opentelemetry-instrumentation-grpc, whose asyncio server-streaming support
loses the span context across yields.
"""

import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from koverage.errors import KoverageError, ResourceExhaustedError, status_code_for
from koverage.serving._auth import ApiKeyAuthenticator, set_current_tenant
from koverage.serving._metrics import RPC_DURATION_S, RPC_IN_FLIGHT, RPC_REQUESTS
from koverage.serving._tracing import extract_context

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer("koverage.serving")

# Health checks and reflection must answer without a key: probes and grpcurl
# discovery come before any credentials.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class MeshServerInterceptor(grpc.aio.ServerInterceptor):
    """Authentication, tracing, metrics and error translation for one server."""

    def __init__(self, service: str, authenticator: ApiKeyAuthenticator) -> None:
        self._service = service
        self._auth = authenticator

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        # Every kind of handler is wrapped, so none skips authentication
        # (fail closed): a client-streaming or bidirectional RPC added later
        # is authenticated like the rest without anyone remembering to.
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary), **codecs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream), **codecs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary), **codecs
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(method, handler.stream_stream), **codecs
        )

    def _wrap_unary(self, method: str, behavior: Callable):
        """Wraps a handler with one response; its first argument is the
        request, or the request iterator of a client-streaming RPC."""

        async def handle(request, context: grpc.aio.ServicerContext):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            RPC_IN_FLIGHT.labels(self._service).inc()
            try:
                with self._server_span(method, context) as span:
                    try:
                        self._authenticate(context)
                        return await behavior(request, context)
                    except Exception as exc:
                        code = _code_of(exc, context)
                        await self._fail(method, context, span, exc)
            finally:
                self._observe(method, code, started)

        return handle

    def _wrap_stream(self, method: str, behavior: Callable):
        """Wraps a handler that streams responses (server-streaming or
        bidirectional); the caller is authenticated before its first read."""

        async def handle(request, context: grpc.aio.ServicerContext) -> AsyncIterator:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            RPC_IN_FLIGHT.labels(self._service).inc()
            try:
                with self._server_span(method, context) as span:
                    try:
                        self._authenticate(context)
                        async for response in behavior(request, context):
                            yield response
                    except Exception as exc:
                        code = _code_of(exc, context)
                        await self._fail(method, context, span, exc)
            except BaseException:
                if code == grpc.StatusCode.OK:
                    code = grpc.StatusCode.CANCELLED
                raise
            finally:
                self._observe(method, code, started)

        return handle

    def _server_span(self, method: str, context: grpc.aio.ServicerContext):
        parent = extract_context(context.invocation_metadata())
        service_name, _, rpc_method = method.lstrip("/").partition("/")
        return _tracer.start_as_current_span(
            method.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": service_name,
                "rpc.method": rpc_method,
            },
            record_exception=False,
            set_status_on_exception=False,
        )

    def _authenticate(self, context: grpc.aio.ServicerContext) -> None:
        tenant = self._auth.tenant_for(context.invocation_metadata())
        set_current_tenant(tenant)
        trace.get_current_span().set_attribute("koverage.tenant", tenant)

    async def _fail(self, method, context, span, exc: Exception) -> None:
        """Reports `exc` to the caller with its status code; never returns normally."""
        if isinstance(exc, grpc.aio.AbortError):
            raise exc  # the handler already chose a status
        code = status_code_for(exc)
        span.set_status(Status(StatusCode.ERROR, code.name))
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        span.set_attribute("error.type", type(exc).__name__)
        trace_id = format(span.get_span_context().trace_id, "032x")
        if isinstance(exc, KoverageError):
            message = str(exc)
            logger.info(
                "rpc failed",
                extra={"rpc_method": method, "code": code.name, "trace_id": trace_id},
            )
        else:
            message = f"internal error (trace_id={trace_id}); see the server logs"
            logger.exception(
                "rpc crashed", extra={"rpc_method": method, "trace_id": trace_id}
            )
        await context.abort(code, message, _status_details(code, message, exc))
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    def _observe(self, method: str, code: grpc.StatusCode, started: float) -> None:
        RPC_IN_FLIGHT.labels(self._service).dec()
        RPC_REQUESTS.labels(self._service, method, code.name).inc()
        RPC_DURATION_S.labels(self._service, method).observe(
            time.perf_counter() - started
        )


def _code_of(exc: Exception, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    if isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    return status_code_for(exc)


def _status_details(code: grpc.StatusCode, message: str, exc: Exception):
    """Trailing metadata carrying google.rpc details (RetryInfo, BadRequest)."""
    details = []
    if isinstance(exc, ResourceExhaustedError) and exc.retry_after_s is not None:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromNanoseconds(int(exc.retry_after_s * 1e9))
        details.append(info)
    field = getattr(exc, "field", "")
    if field:
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=field, description=message)
        details.append(bad)
    if not details:
        return ()
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return (("grpc-status-details-bin", status.SerializeToString()),)
