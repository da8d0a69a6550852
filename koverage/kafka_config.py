"""librdkafka security settings (TLS, SASL) of every Koverage Kafka client.

Every producer, consumer and admin client merges `kafka_client_config` into
its own settings, so one set of `KOVERAGE_KAFKA_*` variables secures all of
them alike.
"""

from koverage.settings import Settings

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
"""Values of KOVERAGE_KAFKA_SECURITY_PROTOCOL (librdkafka `security.protocol`)."""

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""Values of KOVERAGE_KAFKA_SASL_MECHANISM; GSSAPI and OAUTHBEARER need
settings Koverage does not expose."""

_TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def kafka_client_config(settings: Settings) -> dict[str, str]:
    """Returns the librdkafka entries that secure a client's broker connections.

    The password is in the result: pass it to a client, never to a log.

    Args:
        settings: Reads the `kafka_security_protocol`, `kafka_sasl_*` and
            `kafka_ssl_ca_location` fields.

    Returns:
        `security.protocol`, plus `sasl.mechanism`, `sasl.username` and
        `sasl.password` with SASL, and `ssl.ca.location` when a CA is given.

    Raises:
        ValueError: an unknown protocol or mechanism, SASL settings without a
            SASL protocol (or a SASL protocol without them), or a CA file
            without TLS. The message names the variable to change.
    """
    protocol = settings.kafka_security_protocol.strip().upper() or "PLAINTEXT"
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(
            f"KOVERAGE_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol!r}"
            f" is not one of {', '.join(SECURITY_PROTOCOLS)}"
        )
    config = {"security.protocol": protocol}

    sasl = {
        "KOVERAGE_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "KOVERAGE_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "KOVERAGE_KAFKA_SASL_PASSWORD": settings.kafka_sasl_password,
    }
    if protocol.startswith("SASL_"):
        config.update(_sasl_entries(protocol, sasl))
    else:
        stray = [name for name, value in sasl.items() if value]
        if stray:
            raise ValueError(
                f"{', '.join(stray)} set, but KOVERAGE_KAFKA_SECURITY_PROTOCOL="
                f"{protocol} does not use SASL: set the protocol to SASL_SSL (or "
                "SASL_PLAINTEXT) or unset them"
            )

    # Without a CA file librdkafka trusts the system's CA bundle.
    if settings.kafka_ssl_ca_location:
        if protocol not in _TLS_PROTOCOLS:
            raise ValueError(
                "KOVERAGE_KAFKA_SSL_CA_LOCATION is set, but "
                f"KOVERAGE_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS: "
                "set the protocol to SSL or SASL_SSL, or unset the CA"
            )
        config["ssl.ca.location"] = settings.kafka_ssl_ca_location
    return config


def _sasl_entries(protocol: str, sasl: dict[str, str]) -> dict[str, str]:
    mechanism = sasl["KOVERAGE_KAFKA_SASL_MECHANISM"].strip().upper()
    if mechanism not in SASL_MECHANISMS:
        raise ValueError(
            f"KOVERAGE_KAFKA_SECURITY_PROTOCOL={protocol} needs "
            f"KOVERAGE_KAFKA_SASL_MECHANISM, one of {', '.join(SASL_MECHANISMS)} "
            f"(got {sasl['KOVERAGE_KAFKA_SASL_MECHANISM']!r})"
        )
    missing = [
        name
        for name in ("KOVERAGE_KAFKA_SASL_USERNAME", "KOVERAGE_KAFKA_SASL_PASSWORD")
        if not sasl[name]
    ]
    if missing:
        raise ValueError(
            f"KOVERAGE_KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}"
        )
    return {
        "sasl.mechanism": mechanism,
        "sasl.username": sasl["KOVERAGE_KAFKA_SASL_USERNAME"],
        "sasl.password": sasl["KOVERAGE_KAFKA_SASL_PASSWORD"],
    }
