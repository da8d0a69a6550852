"""Kafka security settings become librdkafka entries every client accepts.

Known limitation: no test authenticates against a broker. Tansu, the only
broker these tests run, speaks neither SASL nor TLS, so the entries are
checked by librdkafka itself (it refuses an unknown mechanism or an
unreadable CA file when a client is created), the wiring by inspection of
the services' clients and by a TLS client failing against plaintext Tansu;
a SASL_SSL handshake is left to a real cluster.
"""

import certifi
import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from koverage.kafka_config import kafka_client_config
from koverage.local import ensure_topics
from koverage.settings import Settings
from services.ingest import _app as ingest_app
from services.worker._app import build_consumer
from tests.engines import tansu_broker

# Nothing listens on port 1: the clients are created, never connected.
_NOWHERE = "127.0.0.1:1"
_SASL_ENV = {
    "KOVERAGE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "KOVERAGE_KAFKA_SASL_MECHANISM": "scram-sha-512",
    "KOVERAGE_KAFKA_SASL_USERNAME": "koverage",
    "KOVERAGE_KAFKA_SASL_PASSWORD": "pa55-word",
    "KOVERAGE_KAFKA_SSL_CA_LOCATION": certifi.where(),
}


def test_default_is_plaintext_without_credentials():
    assert kafka_client_config(Settings()) == {"security.protocol": "PLAINTEXT"}


def test_sasl_ssl_settings_from_the_environment():
    config = kafka_client_config(Settings.from_env(_SASL_ENV))

    assert config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "koverage",
        "sasl.password": "pa55-word",
        "ssl.ca.location": certifi.where(),
    }


def test_tls_without_sasl_takes_only_the_ca():
    settings = Settings(
        kafka_security_protocol="SSL", kafka_ssl_ca_location=certifi.where()
    )

    assert kafka_client_config(settings) == {
        "security.protocol": "SSL",
        "ssl.ca.location": certifi.where(),
    }


def test_librdkafka_accepts_the_entries_in_every_client_kind():
    config = kafka_client_config(Settings.from_env(_SASL_ENV))

    producer = Producer({"bootstrap.servers": _NOWHERE, **config})
    consumer = Consumer({"bootstrap.servers": _NOWHERE, "group.id": "g", **config})
    admin = AdminClient({"bootstrap.servers": _NOWHERE, **config})

    assert producer.flush(0) == 0
    consumer.close()
    assert admin is not None


def test_librdkafka_refuses_an_unreadable_ca_file(tmp_path):
    # Proves the previous test can fail: librdkafka checks the CA at creation.
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_location=str(tmp_path / "missing-ca.crt"),
    )

    with pytest.raises(KafkaException, match="ssl.ca.location"):
        Producer({"bootstrap.servers": _NOWHERE, **kafka_client_config(settings)})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"kafka_security_protocol": "TLS"},
            "KOVERAGE_KAFKA_SECURITY_PROTOCOL='TLS' is not one of",
        ),
        (
            {"kafka_sasl_mechanism": "PLAIN"},
            "KOVERAGE_KAFKA_SASL_MECHANISM set, but .*=PLAINTEXT does not use SASL",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_sasl_password": "x"},
            "KOVERAGE_KAFKA_SASL_PASSWORD set, but .*=SSL does not use SASL",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL"},
            "SASL_SSL needs KOVERAGE_KAFKA_SASL_MECHANISM, one of PLAIN, SCRAM-",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"},
            "needs KOVERAGE_KAFKA_SASL_MECHANISM.*got 'GSSAPI'",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
            },
            "SASL_PLAINTEXT needs KOVERAGE_KAFKA_SASL_PASSWORD$",
        ),
        (
            {"kafka_ssl_ca_location": "/etc/ca.crt"},
            "KOVERAGE_KAFKA_SSL_CA_LOCATION is set, but .*=PLAINTEXT .* TLS",
        ),
    ],
    ids=[
        "unknown-protocol",
        "mechanism-without-sasl",
        "password-with-ssl",
        "sasl-without-mechanism",
        "unsupported-mechanism",
        "no-password",
        "ca-without-tls",
    ],
)
def test_contradictory_settings_fail_naming_the_variable(fields, message):
    with pytest.raises(ValueError, match=message):
        kafka_client_config(Settings(**fields))


def test_errors_never_carry_the_password():
    settings = Settings(kafka_sasl_password="pa55-word", kafka_sasl_username="u")

    with pytest.raises(ValueError) as caught:
        kafka_client_config(settings)

    assert "pa55-word" not in str(caught.value)


def test_ingest_refuses_contradictory_kafka_settings_at_build():
    settings = Settings(kafka_bootstrap=_NOWHERE, kafka_sasl_mechanism="PLAIN")

    with pytest.raises(ValueError, match="does not use SASL"):
        ingest_app.build_server(settings, create_topics=False)


async def test_ingest_publisher_gets_the_security_entries(monkeypatch):
    # Async so that the gRPC server it builds finds a running event loop,
    # whatever tests ran before it in this process.
    seen = {}

    class RecordingPublisher:
        def __init__(self, bootstrap, *, config=None):
            seen.update(bootstrap=bootstrap, config=config)

        def close(self):
            pass

    monkeypatch.setattr(ingest_app, "KafkaPublisher", RecordingPublisher)
    settings = Settings.from_env({**_SASL_ENV, "KOVERAGE_KAFKA_BOOTSTRAP": _NOWHERE})

    ingest_app.build_server(settings, create_topics=False)

    assert seen == {
        "bootstrap": _NOWHERE,
        "config": kafka_client_config(settings),
    }


def test_worker_consumer_and_dead_letter_producer_get_the_security_entries():
    settings = Settings.from_env(
        {
            **_SASL_ENV,
            "KOVERAGE_KAFKA_BOOTSTRAP": _NOWHERE,
            "KOVERAGE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        }
    )

    consumer = build_consumer(settings)
    try:
        assert consumer._config.kafka_client_config == kafka_client_config(settings)
    finally:
        consumer._consumer.close()


@pytest.fixture(scope="module")
def kafka_bootstrap():
    with tansu_broker() as bootstrap:
        yield bootstrap


def test_admin_client_gets_the_security_entries(kafka_bootstrap):
    ensure_topics(
        kafka_bootstrap,
        {"koverage.test.security": 1},
        client_config=kafka_client_config(Settings()),
    )

    # Tansu speaks plaintext only: a client told to use TLS cannot list its
    # topics, which shows the entries reach the admin client.
    tls = kafka_client_config(Settings(kafka_security_protocol="SSL"))
    with pytest.raises(KafkaException):
        ensure_topics(
            kafka_bootstrap,
            {"koverage.test.security": 1},
            timeout_s=2.0,
            client_config=tls,
        )
