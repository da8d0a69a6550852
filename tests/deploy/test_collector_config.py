"""The production collector configuration wires the pipelines we promise."""

import pathlib
import re

import pytest
import yaml

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_CONFIG_PATH = _ROOT / "collector" / "otelcol-production.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(_CONFIG_PATH.read_text())


def test_traces_pipeline_order(config):
    traces = config["service"]["pipelines"]["traces"]

    assert traces["receivers"] == ["otlp"]
    # memory_limiter first (refuse before buffering), batch last.
    assert traces["processors"] == ["memory_limiter", "redaction", "batch"]
    assert traces["exporters"] == ["otlp/ingest", "otlp/tracing"]


def test_every_referenced_component_is_defined(config):
    for name, pipeline in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            missing = set(pipeline[kind]) - set(config[kind])
            assert not missing, (name, kind, missing)
    assert set(config["service"]["extensions"]) <= set(config["extensions"])


def test_otlp_receiver_listens_on_standard_ports(config):
    protocols = config["receivers"]["otlp"]["protocols"]

    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_ingest_exporter_authenticates_and_retries(config):
    ingest = config["exporters"]["otlp/ingest"]

    assert ingest["endpoint"] == "${env:KOVERAGE_INGEST_OTLP_ENDPOINT}"
    assert (
        ingest["headers"]["authorization"] == "Bearer ${env:KOVERAGE_COLLECTOR_API_KEY}"
    )
    assert ingest["sending_queue"]["enabled"] and ingest["retry_on_failure"]["enabled"]
    assert (
        config["exporters"]["otlp/tracing"]["endpoint"]
        == "${env:KOVERAGE_TRACING_OTLP_ENDPOINT}"
    )


def test_kafka_path_is_keyed_by_trace_id(config):
    kafka = config["exporters"]["kafka"]

    assert kafka["partition_traces_by_id"] is True
    assert kafka["traces"]["encoding"] == "otlp_proto"
    # Its own topic: the worker reads only ingest's per-span envelopes.
    assert kafka["traces"]["topic"] == "${env:KOVERAGE_KAFKA_COLLECTOR_TOPIC}"
    assert kafka["brokers"] == "${env:KOVERAGE_KAFKA_BOOTSTRAP}"


def test_memory_limiter_takes_its_limit_from_the_environment(config):
    limiter = config["processors"]["memory_limiter"]

    assert limiter["limit_mib"] == "${env:KOVERAGE_COLLECTOR_MEMORY_LIMIT_MIB}"
    assert limiter["spike_limit_mib"] > 0


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("write to ana.lopez@example.org", True),
        ("card 4111 1111 1111 1111", True),
        ("call +44 20 7946 0958", True),
        ("iban GB82 WEST 1234 5698 7654 32", True),
        ("from 192.168.10.7", True),
        ("key sk-abcdefghijklmnop1234", True),
        ("authorization Bearer abcdefghijklmnopqrstuvwx", True),
        ("model qwen3-8b answered in 412 ms", False),
        ("finish_reason stop after 128 tokens", False),
    ],
)
def test_redaction_second_line_masks_personal_data_only(config, text, masked):
    redaction = config["processors"]["redaction"]
    # Go's RE2 and Python's re agree on these patterns (no look-arounds,
    # no backreferences), so Python can check what they match.
    assert not any(
        "(?=" in p or "(?!" in p or "(?<" in p for p in redaction["blocked_values"]
    )

    hit = any(re.search(p, text) for p in redaction["blocked_values"])

    assert redaction["allow_all_keys"] is True
    assert hit is masked


def test_health_extension_serves_the_probe_port(config):
    assert config["extensions"]["health_check"]["endpoint"].endswith(":13133")


def test_readme_documents_the_local_rotel_command():
    readme = (_ROOT / "collector" / "README.md").read_text()

    assert "rotel-agent start" in readme
    for flag in (
        "--otlp-grpc-endpoint",
        "--otlp-http-endpoint",
        "--exporter otlp",
        "--otlp-exporter-endpoint",
    ):
        assert flag in readme
