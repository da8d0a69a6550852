"""The router's model catalog as chat needs it, cached."""

import asyncio
import logging
import time
from decimal import Decimal

import grpc

from koverage.errors import NotFoundError, error_from_rpc
from koverage.router.v1 import router_pb2, router_pb2_grpc

_CATALOG_TTL_S = 60.0
_LIST_MODELS_TIMEOUT_S = 5.0

logger = logging.getLogger(__name__)


class ModelCatalog:
    """Caches RouterService.ListModels for `ttl_s` seconds.

    An unknown model triggers one refresh before it is reported missing, so a
    model added to the router's catalog is usable without waiting for the TTL.
    """

    def __init__(
        self,
        router: router_pb2_grpc.RouterServiceStub,
        *,
        ttl_s: float = _CATALOG_TTL_S,
    ) -> None:
        self._router = router
        self._ttl_s = ttl_s
        self._models: dict[str, router_pb2.ModelInfo] = {}
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()

    async def get(self, model_id: str) -> router_pb2.ModelInfo:
        """Returns the catalog entry of `model_id`.

        Raises:
            NotFoundError: The router does not know the model.
            UnavailableError (or another KoverageError): ListModels failed.
        """
        stale = time.monotonic() - self._fetched_at > self._ttl_s
        if stale or model_id not in self._models:
            await self._refresh(only_if_older_than=time.monotonic())
        info = self._models.get(model_id)
        if info is None:
            raise NotFoundError(
                f"model {model_id!r} is not in the router's catalog; "
                "RouterService.ListModels lists the models"
            )
        return info

    async def _refresh(self, *, only_if_older_than: float) -> None:
        async with self._lock:
            # Another caller may have refreshed while this one waited.
            if self._fetched_at >= only_if_older_than:
                return
            try:
                response = await self._router.ListModels(
                    router_pb2.ListModelsRequest(), timeout=_LIST_MODELS_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from exc
            self._models = {m.id: m for m in response.models}
            self._fetched_at = time.monotonic()
            logger.debug("model catalog refreshed", extra={"models": len(self._models)})


def estimate_cost_usd(
    info: router_pb2.ModelInfo, input_tokens: int, output_tokens: int
) -> Decimal:
    """Token-priced cost of a generation that ended without the router's
    summary (cancelled or failed mid-stream).

    Known limitation: GPU-second-priced models (self-hosted) report zero here,
    since the call time on the GPU is unknown to chat; the router's own span
    has the real figure.
    """
    input_price = Decimal(info.input_usd_per_mtok or "0")
    output_price = Decimal(info.output_usd_per_mtok or "0")
    return (input_price * input_tokens + output_price * output_tokens) / 1_000_000
