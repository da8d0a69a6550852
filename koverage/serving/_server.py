"""MeshServer: a grpc.aio server with what every Koverage server needs.

Health checking, reflection, the mesh interceptor (auth, tracing, metrics,
error translation), a Prometheus endpoint, and graceful shutdown that marks
the server NOT_SERVING, lets open streams finish within a grace period, and
then runs the service's own cleanup.
"""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from koverage.serving._auth import ApiKeyAuthenticator
from koverage.serving._interceptor import MeshServerInterceptor
from koverage.serving._metrics import start_metrics_endpoint
from koverage.settings import Settings

logger = logging.getLogger(__name__)

_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class MeshServer:
    """One Koverage gRPC server.

    Usage:
        server = MeshServer("router", settings, "127.0.0.1:50051")
        router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server.grpc)
        server.expose(router_pb2.DESCRIPTOR.services_by_name["RouterService"])
        await server.start()
        await server.wait_for_termination()  # or await server.stop()
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        address: str,
        *,
        metrics_port: int | None = None,
    ) -> None:
        self.name = name
        self._settings = settings
        self._address = address
        self._metrics_port = (
            settings.metrics_port if metrics_port is None else metrics_port
        )
        self._authenticator = ApiKeyAuthenticator(
            settings.api_key_tenants(),
            required=settings.auth_required,
            relay_tenants=settings.relay_tenant_set(),
        )
        self.grpc = grpc.aio.server(
            interceptors=[MeshServerInterceptor(name, self._authenticator)],
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.grpc)
        self._service_names: list[str] = [
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self._drain_hooks: list[Callable[[], Awaitable[None]]] = []
        self._stopped = asyncio.Event()
        self.port = 0
        self.metrics_port = 0

    def expose(self, *services: ServiceDescriptor) -> None:
        """Lists services for health checks and reflection (after adding them)."""
        self._service_names.extend(s.full_name for s in services)

    def on_stop(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Registers a coroutine run after the server has drained, last first."""
        self._cleanups.append(cleanup)

    def on_draining(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Registers a coroutine run when stopping begins, before open RPCs
        drain, first registered first. A service uses it to tell its own
        handlers apart from the ones the server cancels when the grace ends."""
        self._drain_hooks.append(hook)

    @property
    def address(self) -> str:
        """host:port actually bound (valid after start)."""
        host = self._address.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Binds the port, starts serving and marks every service SERVING."""
        reflection.enable_server_reflection(self._service_names, self.grpc)
        self.port = self.grpc.add_insecure_port(self._address)
        if self.port == 0:
            raise OSError(f"{self.name}: could not bind {self._address}")
        await self.grpc.start()
        for service in self._service_names:
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self._metrics_port >= 0:
            self.metrics_port = start_metrics_endpoint(
                self._settings.host, self._metrics_port
            )
        logger.info(
            "listening",
            extra={
                "service": self.name,
                "address": self.address,
                "metrics_port": self.metrics_port,
                "auth_required": self._authenticator.required,
            },
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """Drains open RPCs for up to `grace_s`, then runs the cleanups."""
        if self._stopped.is_set():
            return
        grace_s = self._settings.shutdown_grace_s if grace_s is None else grace_s
        logger.info("draining", extra={"service": self.name, "grace_s": grace_s})
        await self._health.enter_graceful_shutdown()
        for hook in self._drain_hooks:
            try:
                await hook()
            except Exception:
                logger.exception("draining hook failed", extra={"service": self.name})
        await self.grpc.stop(grace_s)
        for cleanup in reversed(self._cleanups):
            try:
                await cleanup()
            except Exception:
                logger.exception("cleanup failed", extra={"service": self.name})
        self._stopped.set()
        logger.info("stopped", extra={"service": self.name})

    async def wait_for_termination(self) -> None:
        """Serves until SIGTERM or SIGINT, then stops gracefully."""
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop_requested.set)
        waiter = asyncio.ensure_future(stop_requested.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        await asyncio.wait({waiter, stopped}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopped.cancel()
        await self.stop()
