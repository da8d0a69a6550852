"""Runs the chat service: `python -m services.chat`."""

import asyncio

from koverage.logs import configure_logging
from koverage.serving import run, setup_tracing
from koverage.settings import Settings
from services.chat._app import build_server, migrate_database


async def _main() -> None:
    settings = Settings.from_env()
    configure_logging("chat", settings.log_level)
    setup_tracing(settings.service_name or "koverage-chat", settings.otlp_endpoint)
    await asyncio.to_thread(migrate_database, settings.database_url)
    server = await build_server(settings)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    run(_main)
