"""Supervised child processes: start, wait until ready, watch, stop them all.

Each child leads its own process group (a new session), so stopping it stops
whatever it spawned too, and a Ctrl-C at the terminal reaches only the parent,
which then stops the children in reverse start order. Three layers make sure
no child outlives the parent:

1. `Supervisor.stop()` (also on `with` exit) signals each group, waits, and
   kills what is left.
2. An `atexit` hook stops every supervisor still running, so an unhandled
   exception or a KeyboardInterrupt that unwinds the interpreter cleans up.
   `handle_termination_signals()` turns SIGTERM and SIGHUP into the same
   orderly exit.
3. On Linux each child asks the kernel for a parent-death signal, so even a
   SIGKILLed parent takes its direct children down with it.
"""

import atexit
import ctypes
import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

from koverage.local._errors import ProcessDiedError, ProcessStartError
from koverage.local._readiness import ReadinessProbe

_READY_POLL_S = 0.05
_LOG_TAIL_BYTES = 4000
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
_PR_SET_PDEATHSIG = 1

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ChildExit:
    """A child that exited without being asked to stop."""

    name: str
    """The name it was started under."""

    pid: int
    """Its process id."""

    returncode: int
    """Exit status; negative for the number of the signal that killed it."""

    log_path: Path
    """File holding its stdout and stderr."""


class ManagedProcess:
    """One supervised child, leader of its own process group.

    Created by `Supervisor.start_process`; not meant to be built directly.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        popen: subprocess.Popen,
        log_path: Path,
        *,
        stop_signal: signal.Signals,
        stop_timeout_s: float,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.log_path = log_path
        self._popen = popen
        self._stop_signal = stop_signal
        self._stop_timeout_s = stop_timeout_s
        self._stopping = False

    @property
    def pid(self) -> int:
        """Process id of the child (also its process group id)."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once the child has exited, else None."""
        return self._popen.poll()

    def is_running(self) -> bool:
        """Returns True while the child has not exited."""
        return self._popen.poll() is None

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Waits for the child to exit; returns its status, or None on timeout."""
        try:
            return self._popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int:
        """Stops the child's whole process group; idempotent.

        Sends the stop signal, waits up to the stop timeout, then SIGKILLs
        the group. Anything left in the group afterwards is killed too.

        Returns:
            The child's exit status.
        """
        self._stopping = True
        if self._popen.poll() is None:
            self._signal_group(self._stop_signal)
            try:
                self._popen.wait(self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s did not stop within %.1f s of %s; killing it",
                    self.name,
                    self._stop_timeout_s,
                    self._stop_signal.name,
                )
                self._signal_group(signal.SIGKILL)
                self._popen.wait()

        # Grandchildren that ignored the stop signal would otherwise linger.
        self._signal_group(signal.SIGKILL)
        logger.info("%s stopped (status %s)", self.name, self._popen.returncode)
        return self._popen.returncode

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """Returns the last `max_bytes` of the child's log file as text."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - max_bytes))
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self._popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __repr__(self) -> str:
        return f"ManagedProcess(name={self.name!r}, pid={self.pid})"


class Supervisor:
    """Starts named children, streams their output to files, stops them all.

    Each child's stdout and stderr go to `<run_dir>/<name>.log` (appended).
    A child that exits on its own after it was ready is logged as an error,
    recorded in `exits`, passed to `on_exit`, and makes `check()` raise.

    Use it as a context manager, or call `stop()`; an `atexit` hook stops it
    if neither happens.

    Args:
        run_dir: Directory for the log files; created if missing.
        on_exit: Called (from a watcher thread) with each unexpected exit.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        on_exit: Callable[[ChildExit], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._on_exit = on_exit
        self._children: list[ManagedProcess] = []
        self._exits: list[ChildExit] = []
        self._exited = threading.Event()
        self._lock = threading.RLock()
        _live_supervisors.add(self)

    def start_process(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        ready: ReadinessProbe | None = None,
        ready_timeout_s: float = 30.0,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout_s: float = 10.0,
        user: str | int | None = None,
        die_with_parent: bool = True,
    ) -> ManagedProcess:
        """Starts a child and returns once `ready` says it serves.

        Known limitation: on Linux, `die_with_parent` delivers `stop_signal`
        to the child when the *thread* that started it exits, not only when
        the process does. Start children from a thread that lives as long as
        they should (the main thread, or a long-lived worker), or pass
        `die_with_parent=False` and rely on `stop()` and the atexit hook.

        Args:
            name: Unique name; also the log file's name. Letters, digits,
                `_`, `.` and `-`.
            argv: Program and arguments.
            env: Variables layered over this process's environment.
            cwd: Working directory of the child.
            ready: Probe polled until it returns True; None means ready as
                soon as the child is started.
            ready_timeout_s: How long to wait for `ready`.
            stop_signal: First signal sent to the group on stop (Postgres
                wants SIGINT for a fast shutdown).
            stop_timeout_s: Wait after `stop_signal` before SIGKILL.
            user: Run the child as this user (needs root).
            die_with_parent: Ask the kernel to send `stop_signal` to the
                child when its parent dies (Linux only).

        Returns:
            The running child.

        Raises:
            ValueError: `name` is malformed or already running.
            ProcessStartError: The child exited or was not ready in time; the
                message carries the tail of its log.
        """
        self._validate_name(name)
        _live_supervisors.add(self)  # again, if it was stopped and is reused
        log_path = self.run_dir / f"{name}.log"
        child_env = {**os.environ, **(env or {})}
        preexec = _parent_death_hook(stop_signal) if die_with_parent else None

        # The child writes straight into the log file; nothing to pump.
        with log_path.open("ab") as log:
            log.write(f"--- koverage: starting {name}: {list(argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                cwd=cwd,
                user=user,
                start_new_session=True,
                # The hook only calls prctl and getppid: safe with threads.
                preexec_fn=preexec,  # noqa: PLW1509
            )
        child = ManagedProcess(
            name,
            argv,
            popen,
            log_path,
            stop_signal=stop_signal,
            stop_timeout_s=stop_timeout_s,
        )
        logger.info("%s started (pid %d)", name, popen.pid)

        try:
            self._wait_ready(child, ready, ready_timeout_s)
        except BaseException:
            child.stop()
            raise

        with self._lock:
            self._children.append(child)
        threading.Thread(
            target=self._watch, args=(child,), name=f"watch-{name}", daemon=True
        ).start()
        return child

    @property
    def processes(self) -> list[ManagedProcess]:
        """Children started and not stopped, in start order."""
        with self._lock:
            return list(self._children)

    def __getitem__(self, name: str) -> ManagedProcess:
        for child in self.processes:
            if child.name == name:
                return child
        raise KeyError(name)

    @property
    def exits(self) -> list[ChildExit]:
        """Children that exited on their own, in the order they did."""
        with self._lock:
            return list(self._exits)

    def check(self) -> None:
        """Raises if any child exited on its own.

        Raises:
            ProcessDiedError: Names each child, its status and its log file.
        """
        exits = self.exits
        if exits:
            raise ProcessDiedError(
                "; ".join(
                    f"{e.name} (pid {e.pid}) exited with status {e.returncode}, "
                    f"see {e.log_path}"
                    for e in exits
                )
            )

    def wait_for_exit(self, timeout_s: float | None = None) -> ChildExit | None:
        """Blocks until some child exits on its own; returns it, or None on timeout."""
        if not self._exited.wait(timeout_s):
            return None
        return self.exits[0]

    def stop_process(self, name: str) -> int:
        """Stops one child and forgets it; returns its exit status."""
        child = self[name]
        status = child.stop()
        with self._lock:
            self._children.remove(child)
        return status

    def stop(self) -> None:
        """Stops every child in reverse start order; idempotent."""
        while True:
            with self._lock:
                if not self._children:
                    break
                child = self._children.pop()
            try:
                child.stop()
            except Exception:
                logger.exception("could not stop %s (pid %d)", child.name, child.pid)
        _live_supervisors.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _validate_name(self, name: str) -> None:
        if not _NAME_PATTERN.match(name):
            raise ValueError(
                f"name={name!r} is not allowed: use letters, digits, '_', '.', '-'"
            )
        if any(c.name == name and c.is_running() for c in self.processes):
            raise ValueError(f"name={name!r} is already running in this supervisor")

    def _wait_ready(
        self, child: ManagedProcess, ready: ReadinessProbe | None, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            status = child.returncode
            if status is not None:
                raise ProcessStartError(
                    f"{child.name} exited with status {status} before it was "
                    f"ready; last output ({child.log_path}):\n{child.log_tail()}"
                )
            if ready is None or _probe(child.name, ready):
                logger.info("%s ready (pid %d)", child.name, child.pid)
                return
            if time.monotonic() > deadline:
                raise ProcessStartError(
                    f"{child.name} was not ready within {timeout_s:.1f} s; last "
                    f"output ({child.log_path}):\n{child.log_tail()}"
                )
            time.sleep(_READY_POLL_S)

    def _watch(self, child: ManagedProcess) -> None:
        status = child.wait()
        if child._stopping:
            return

        exit_record = ChildExit(child.name, child.pid, status, child.log_path)
        logger.error(
            "%s (pid %d) exited on its own with status %s; see %s",
            child.name,
            child.pid,
            status,
            child.log_path,
        )
        with self._lock:
            self._exits.append(exit_record)
        self._exited.set()
        if self._on_exit is not None:
            try:
                self._on_exit(exit_record)
            except Exception:
                logger.exception("on_exit callback failed for %s", child.name)


def handle_termination_signals() -> None:
    """Makes SIGTERM and SIGHUP exit the interpreter like Ctrl-C does.

    Python dies on SIGTERM without running `finally` blocks or `atexit`
    hooks; after this call it raises SystemExit in the main thread instead,
    so every supervisor stops its children. Call it from the main thread of
    a program (the CLI), never from library code.
    """

    def raise_exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_exit)


_live_supervisors: "weakref.WeakSet[Supervisor]" = weakref.WeakSet()


@atexit.register
def _stop_live_supervisors() -> None:
    for supervisor in list(_live_supervisors):
        supervisor.stop()


def _probe(name: str, ready: ReadinessProbe) -> bool:
    try:
        return bool(ready())
    except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
        logger.debug("%s not ready yet: %s", name, exc)
        return False


def _parent_death_hook(sig: signal.Signals) -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None

    # Resolve everything before fork: the hook runs between fork and exec,
    # where it must not import or allocate much.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent_pid = os.getpid()
    signum = int(sig)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        # The parent may have died before prctl took effect.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signum)

    return hook
