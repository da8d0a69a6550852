"""Channels from one Koverage service (or user) to another.

Every outgoing call carries the current trace context (W3C traceparent) and,
when configured, `authorization: Bearer <key>`. A call made while serving an
RPC also names that RPC's tenant in `koverage-on-behalf-of`, which the callee
honours only from a relay key (see `koverage.serving._auth`).
"""

import grpc

from koverage.serving._auth import ON_BEHALF_OF_HEADER, caller_tenant
from koverage.serving._tracing import inject_context

_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def connect(address: str, *, api_key: str = "") -> grpc.aio.Channel:
    """Opens an insecure aio channel to `address` with the mesh interceptors."""
    interceptor_args = (api_key,)
    return grpc.aio.insecure_channel(
        address,
        interceptors=[
            _UnaryUnaryMetadata(*interceptor_args),
            _UnaryStreamMetadata(*interceptor_args),
        ],
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ],
    )


def outgoing_metadata(api_key: str = "", metadata=None) -> list[tuple[str, str]]:
    """Returns `metadata` plus trace context, the API key and, inside an RPC,
    the tenant it serves."""
    result = [
        (k, v) for k, v in (metadata or ()) if k not in ("traceparent", "tracestate")
    ]
    if api_key and not any(k == "authorization" for k, _ in result):
        result.append(("authorization", f"Bearer {api_key}"))
        tenant = caller_tenant()
        if tenant is not None and not any(k == ON_BEHALF_OF_HEADER for k, _ in result):
            result.append((ON_BEHALF_OF_HEADER, tenant))
    inject_context(result)
    return result


class _MetadataInterceptor:
    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def _details(
        self, details: grpc.aio.ClientCallDetails
    ) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=details.timeout,
            metadata=grpc.aio.Metadata(
                *outgoing_metadata(self._api_key, details.metadata)
            ),
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )


class _UnaryUnaryMetadata(_MetadataInterceptor, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


class _UnaryStreamMetadata(_MetadataInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)
