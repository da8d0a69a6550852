"""Where a running `koverage up` records its endpoints, for `koverage status`."""

import json
import os
import pathlib

from koverage.settings import Settings


def run_dir(settings: Settings) -> pathlib.Path:
    """The directory holding logs, embedded data and the state file."""
    return pathlib.Path(
        settings.run_dir or pathlib.Path.home() / ".koverage"
    ).absolute()


def state_path(settings: Settings) -> pathlib.Path:
    return run_dir(settings) / "up.json"


def write_state(settings: Settings, state: dict) -> None:
    """Writes the state file atomically, readable by the owner only (it holds
    the API key)."""
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def read_state(settings: Settings) -> dict | None:
    path = state_path(settings)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def clear_state(settings: Settings, pid: int) -> None:
    """Removes the state file if it still belongs to process `pid`."""
    state = read_state(settings)
    if state and state.get("pid") == pid:
        state_path(settings).unlink(missing_ok=True)
