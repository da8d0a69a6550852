"""Runs a service's main coroutine on the configured asyncio event loop."""

import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from koverage.settings import Settings

EVENT_LOOPS = ("auto", "asyncio", "uvloop")
"""Values `event_loop` accepts (see `Settings.event_loop`)."""

logger = logging.getLogger(__name__)


def run(
    main: Callable[[], Coroutine[Any, Any, Any]], *, event_loop: str | None = None
) -> Any:
    """Runs `main()` to completion on a fresh event loop and returns its result.

    Args:
        main: The service's main coroutine function (called once, inside the
            new loop).
        event_loop: `uvloop`, `asyncio` or `auto` (uvloop when installed);
            None reads `KOVERAGE_EVENT_LOOP`.

    Raises:
        ValueError: `event_loop` is not one of `EVENT_LOOPS`.
        ModuleNotFoundError: `uvloop` was asked for and is not installed.
    """
    choice = Settings.from_env().event_loop if event_loop is None else event_loop
    factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop constructor for `event_loop`; None means asyncio's default.

    Raises:
        ValueError: `event_loop` is not one of `EVENT_LOOPS`.
        ModuleNotFoundError: `uvloop` was asked for and is not installed.
    """
    if event_loop not in EVENT_LOOPS:
        raise ValueError(
            f"event_loop={event_loop!r} is not one of {', '.join(EVENT_LOOPS)}"
        )
    if event_loop == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ModuleNotFoundError:
        if event_loop == "uvloop":
            raise
        logger.debug("uvloop is not installed; using asyncio's event loop")
        return None
    return uvloop.new_event_loop
