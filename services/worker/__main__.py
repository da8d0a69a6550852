"""Runs the worker: `python -m services.worker`."""

from koverage.logs import configure_logging
from koverage.serving import run, setup_tracing
from koverage.settings import Settings
from services.worker._app import build_worker
from services.worker.dashboard import start_dashboard


async def _main() -> None:
    settings = Settings.from_env()
    configure_logging("worker", settings.log_level)
    setup_tracing(settings.service_name or "koverage-worker", settings.otlp_endpoint)
    server, consumer = await build_worker(settings)
    await server.start()
    # The worker owns the telemetry tables, so it also serves the dashboard.
    dashboard = None
    if settings.dashboard_address:
        dashboard = await start_dashboard(
            settings,
            settings.database_url,
            api_keys=settings.api_key_tenants(),
            auth_required=settings.auth_required,
            metrics_urls=tuple(
                filter(None, settings.dashboard_metrics_urls.split(","))
            ),
            trace_url_template=settings.trace_url_template,
        )
    try:
        await server.wait_for_termination()
    finally:
        if dashboard is not None:
            await dashboard.stop()
    if consumer is not None and consumer.failed:
        raise SystemExit("the span consumer failed (see the log); exiting to restart")


if __name__ == "__main__":
    run(_main)
