"""The chart wires Kafka TLS and SASL into every Kafka client it runs."""

import copy

import pytest
import yaml

from tests.deploy.conftest import CHART_DIR, load_values, manifests, render

helm = pytest.importorskip("helm_python")

_SASL_VALUES = CHART_DIR / "ci" / "kafka-sasl-values.yaml"
_DEFAULT_VALUES = CHART_DIR / "ci" / "default-values.yaml"
_KAFKA_CLIENTS = {"ingest", "worker"}
_CA_FILE = "/etc/koverage/kafka-ca/ca.crt"


def _deployments(objects: list[dict]) -> dict[str, dict]:
    return {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o
        for o in objects
        if o["kind"] == "Deployment"
    }


def _pod(deployment: dict) -> tuple[dict, dict]:
    spec = deployment["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _collector_config_map(objects: list[dict]) -> dict:
    return next(
        o
        for o in objects
        if o["kind"] == "ConfigMap"
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == "collector"
    )


@pytest.fixture(scope="module")
def sasl_objects() -> list[dict]:
    return manifests(render(load_values(_SASL_VALUES)))


def test_kafka_clients_get_protocol_login_and_ca(sasl_objects):
    for component in _KAFKA_CLIENTS:
        _, container = _pod(_deployments(sasl_objects)[component])
        env = _env(container)

        assert env["KOVERAGE_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["KOVERAGE_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        assert env["KOVERAGE_KAFKA_SASL_USERNAME"]["value"] == "koverage"
        assert env["KOVERAGE_KAFKA_SSL_CA_LOCATION"]["value"] == _CA_FILE
        # The password only by reference to the existing Secret's key.
        password = env["KOVERAGE_KAFKA_SASL_PASSWORD"]
        assert "value" not in password
        assert password["valueFrom"]["secretKeyRef"] == {
            "name": "koverage-credentials",
            "key": "password",
        }


def test_ca_is_mounted_read_only_from_its_secret(sasl_objects):
    for component in (*_KAFKA_CLIENTS, "collector"):
        spec, container = _pod(_deployments(sasl_objects)[component])
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["name"]: m for m in container["volumeMounts"]}

        assert volumes["kafka-ca"]["secret"] == {
            "secretName": "my-cluster-cluster-ca-cert",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        }, component
        assert mounts["kafka-ca"] == {
            "name": "kafka-ca",
            "mountPath": "/etc/koverage/kafka-ca",
            "readOnly": True,
        }, component


def test_services_without_kafka_see_no_kafka_credentials(sasl_objects):
    for component, deployment in _deployments(sasl_objects).items():
        if component in (*_KAFKA_CLIENTS, "collector"):
            continue
        spec, container = _pod(deployment)

        assert not [n for n in _env(container) if n.startswith("KOVERAGE_KAFKA_")]
        assert "kafka-ca" not in {v["name"] for v in spec["volumes"]}, component


def test_collector_kafka_exporter_logs_in_through_an_overlay(sasl_objects):
    config_map = _collector_config_map(sasl_objects)
    _, container = _pod(_deployments(sasl_objects)["collector"])
    overlay = yaml.safe_load(config_map["data"]["kafka-security.yaml"])

    assert overlay == {
        "exporters": {
            "kafka": {
                "auth": {
                    "sasl": {
                        "mechanism": "SCRAM-SHA-512",
                        "username": "${env:KOVERAGE_KAFKA_SASL_USERNAME}",
                        "password": "${env:KOVERAGE_KAFKA_SASL_PASSWORD}",
                    }
                },
                "tls": {"insecure": False, "ca_file": _CA_FILE},
            }
        }
    }
    # Layered after the production file, before the exporter choice.
    configs = [a for a in container["args"] if a.startswith("--config=")]
    assert configs[:2] == [
        "--config=/etc/otelcol/otelcol.yaml",
        "--config=/etc/otelcol/kafka-security.yaml",
    ]
    env = _env(container)
    assert env["KOVERAGE_KAFKA_SASL_USERNAME"]["value"] == "koverage"
    assert env["KOVERAGE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "koverage-credentials",
        "key": "password",
    }


def test_tls_only_overlay_has_no_login():
    values = load_values(_DEFAULT_VALUES)
    values["kafka"]["security"] = {
        "protocol": "SSL",
        "caSecret": {"name": "kafka-ca"},
    }
    objects = manifests(render(values))

    overlay = yaml.safe_load(
        _collector_config_map(objects)["data"]["kafka-security.yaml"]
    )
    assert overlay == {
        "exporters": {"kafka": {"tls": {"insecure": False, "ca_file": _CA_FILE}}}
    }
    _, ingest = _pod(_deployments(objects)["ingest"])
    assert "KOVERAGE_KAFKA_SASL_PASSWORD" not in _env(ingest)


def test_plaintext_default_adds_no_overlay_credentials_or_mounts():
    objects = manifests(render(load_values(_DEFAULT_VALUES)))

    assert "kafka-security.yaml" not in _collector_config_map(objects)["data"]
    for component, deployment in _deployments(objects).items():
        spec, container = _pod(deployment)
        env = _env(container)
        assert "KOVERAGE_KAFKA_SASL_PASSWORD" not in env, component
        assert "kafka-ca" not in {v["name"] for v in spec["volumes"]}, component
        if component in _KAFKA_CLIENTS:
            assert env["KOVERAGE_KAFKA_SECURITY_PROTOCOL"]["value"] == "PLAINTEXT"


def test_changing_kafka_security_rolls_the_collector():
    values = load_values(_DEFAULT_VALUES)
    secured = copy.deepcopy(values)
    secured["kafka"]["security"] = {"protocol": "SSL"}

    def checksum(v: dict) -> str:
        collector = _deployments(manifests(render(v)))["collector"]
        return collector["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    assert checksum(values) != checksum(secured)


@pytest.mark.parametrize(
    ("security", "message"),
    [
        (
            {"protocol": "PLAINTEXT", "sasl": {"mechanism": "PLAIN"}},
            "kafka.security.sasl is set but kafka.security.protocol is PLAINTEXT",
        ),
        (
            {"protocol": "SASL_SSL", "sasl": {"username": "koverage"}},
            (
                "kafka.security.protocol is SASL_SSL but kafka.security.sasl.mechanism "
                "is empty"
            ),
        ),
        (
            {"protocol": "SASL_PLAINTEXT", "sasl": {"mechanism": "PLAIN"}},
            "kafka.security.sasl.username is empty",
        ),
        (
            {"caSecret": {"name": "kafka-ca"}},
            (
                "caSecret.name is set but kafka.security.protocol is PLAINTEXT, which "
                "does not use TLS"
            ),
        ),
    ],
    ids=["mechanism-without-sasl", "sasl-without-mechanism", "no-user", "ca-no-tls"],
)
def test_contradictory_kafka_security_fails_clearly(security, message):
    values = load_values(_DEFAULT_VALUES)
    values["kafka"]["security"] = security

    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


def test_sasl_without_a_password_key_fails_clearly():
    values = load_values(_SASL_VALUES)
    values["secrets"]["keys"]["kafkaSaslPassword"] = ""

    with pytest.raises(helm.HelmRenderError, match="secrets.keys.kafkaSaslPassword"):
        render(values)


@pytest.mark.parametrize(
    ("security", "field"),
    [
        ({"sasl": {"mechanism": "GSSAPI"}}, "mechanism"),
        ({"protocol": "TLS"}, "protocol"),
    ],
)
def test_values_schema_rejects_unknown_protocol_and_mechanism(security, field):
    values = load_values(_DEFAULT_VALUES)
    values["kafka"]["security"] = security

    with pytest.raises(helm.HelmValuesError, match=field):
        render(values)
