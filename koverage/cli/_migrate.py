"""`koverage migrate`: apply every service's schema migrations."""

import importlib.resources
import logging

from koverage.db import migrate
from koverage.logs import configure_logging
from koverage.settings import Settings

logger = logging.getLogger(__name__)

# Each table has one owner; each owner keeps its migrations in its package.
OWNERS = ("chat", "worker", "underwriter")


def register(commands) -> None:
    parser = commands.add_parser("migrate", help="apply database migrations")
    parser.add_argument(
        "--database-url", default=None, help="overrides KOVERAGE_DATABASE_URL"
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    settings = Settings.from_env()
    configure_logging("migrate", settings.log_level)
    url = args.database_url or settings.database_url
    if not url:
        print("koverage migrate: set KOVERAGE_DATABASE_URL or pass --database-url")
        return 2
    migrate_all(url)
    return 0


def migrate_all(database_url: str) -> None:
    """Applies the migrations of every owner that has them, in a fixed order."""
    for owner in OWNERS:
        directory = migrations_dir(owner)
        if directory is None:
            continue
        migrate(database_url, owner=owner, directory=directory)
        logger.info("migrated", extra={"owner": owner})


def migrations_dir(owner: str):
    try:
        directory = importlib.resources.files(f"services.{owner}") / "migrations"
    except ModuleNotFoundError:
        return None
    return directory if directory.is_dir() else None
