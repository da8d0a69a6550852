"""Runs the underwriter service: `python -m services.underwriter`."""

from koverage.logs import configure_logging
from koverage.serving import run, setup_tracing
from koverage.settings import Settings
from services.underwriter._app import build_server


async def _main() -> None:
    settings = Settings.from_env()
    configure_logging("underwriter", settings.log_level)
    setup_tracing(
        settings.service_name or "koverage-underwriter", settings.otlp_endpoint
    )
    server = await build_server(settings)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    run(_main)
