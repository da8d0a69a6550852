"""Runs the ingest service: `python -m services.ingest`."""

from koverage.logs import configure_logging
from koverage.serving import run, setup_tracing
from koverage.settings import Settings
from services.ingest._app import build_server


async def _main() -> None:
    settings = Settings.from_env()
    configure_logging("ingest", settings.log_level)
    # The ingest service's own RPC spans are not exported: sending them to the
    # collector that feeds this service would loop every export back in.
    setup_tracing(settings.service_name or "koverage-ingest", "")
    server = build_server(settings)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    run(_main)
