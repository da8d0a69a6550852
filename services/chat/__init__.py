"""The chat service: conversations with streamed answers, cancel and resume."""

from services.chat._app import (
    ABANDONED_REASON,
    MIGRATIONS_DIR,
    build_server,
    migrate_database,
)
from services.chat._history import estimate_tokens, plan_prompt
from services.chat._servicer import ChatServicer

__all__ = [
    "ABANDONED_REASON",
    "MIGRATIONS_DIR",
    "ChatServicer",
    "build_server",
    "estimate_tokens",
    "migrate_database",
    "plan_prompt",
]
