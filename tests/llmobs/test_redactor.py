"""Redaction of each kind of PII and credential, and what must stay."""

import pytest

from koverage.llmobs import contains_pii, iban_valid, luhn_valid, redact


@pytest.mark.parametrize(
    ("value", "kind", "marker"),
    [
        ("jane.doe+work@example.co.uk", "email", "[EMAIL]"),
        ("+1-984-182-0190", "phone", "[PHONE]"),
        ("(415) 555-0134", "phone", "[PHONE]"),
        ("+46 (0)8 928 571 38", "phone", "[PHONE]"),
        ("0490 75 40 81", "phone", "[PHONE]"),
        ("345-899-3560x4587", "phone", "[PHONE]"),
        ("460-89-9847", "ssn", "[SSN]"),
        ("4111 1111 1111 1111", "card", "[CARD]"),
        ("4111-1111-1111-1111", "card", "[CARD]"),
        ("4454794511390933", "card", "[CARD]"),
        ("3782 822463 10005", "card", "[CARD]"),
        ("GB82 WEST 1234 5698 7654 32", "iban", "[IBAN]"),
        ("GB82WEST12345698765432", "iban", "[IBAN]"),
        ("gb82west12345698765432", "iban", "[IBAN]"),
        ("192.168.10.254", "ip", "[IP]"),
        ("2001:db8:85a3::8a2e:370:7334", "ip", "[IP]"),
        ("fe80::1", "ip", "[IP]"),
        ("sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv", "credential", "[CREDENTIAL]"),
        ("AKIAIOSFODNN7EXAMPLE", "credential", "[CREDENTIAL]"),
        ("ghp_" + "a1B2c3D4e5" * 4, "credential", "[CREDENTIAL]"),
        ("Bearer abcDEF123456ghiJKL789", "credential", "[CREDENTIAL]"),
        ("xoxb-1234567890-abcdefghij", "credential", "[CREDENTIAL]"),
        ("ASIAIOSFODNN7EXAMPLE", "credential", "[CREDENTIAL]"),
        ("AIza" + "Sy0123456789abcdefghijklmnopqrstuvw", "credential", "[CREDENTIAL]"),
        ("github_pat_" + "11ABCDEFG0" * 3, "credential", "[CREDENTIAL]"),
        ("::1", "ip", "[IP]"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "credential",
            "[CREDENTIAL]",
        ),
    ],
)
def test_redact_replaces_each_kind_in_prose(value, kind, marker):
    text = f"Please note {value} for later."

    redacted, counts = redact(text)

    assert value not in redacted
    assert redacted == f"Please note {marker} for later."
    assert counts == {kind: 1}
    assert contains_pii(text)


def test_redact_removes_a_private_key_block_even_when_cut_off():
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----"
    cut = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"

    whole, whole_counts = redact(f"key:\n{block}\nthanks")
    partial, partial_counts = redact(f"key:\n{cut}")

    assert whole == "key:\n[CREDENTIAL]\nthanks"
    assert whole_counts == {"credential": 1}
    assert partial == "key:\n[CREDENTIAL]"
    assert partial_counts == {"credential": 1}


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "order 4454794511390934 fails Luhn",
        "iban GB82WEST12345698765433 fails mod-97",
        "ssn 000-12-3456 and 666-12-3456 and 912-12-3456 are never issued",
        "version 1.2.3 and 999.1.1.1 are not addresses",
        "meeting at 12:30:45 on 2024-05-17",
        "the model scored 87 percent on 1500 prompts",
        "a task-oriented skill with no key",
        "Plain words, nothing to hide: Bearer of good news.",
    ],
)
def test_redact_leaves_values_that_fail_validation(text):
    redacted, counts = redact(text)

    assert redacted is text
    assert counts == {}
    assert not contains_pii(text)


def test_redact_counts_several_values_of_one_kind():
    text = "a@x.io, b@y.io and c@z.io; call +44 20 7946 0958"

    redacted, counts = redact(text)

    assert redacted == "[EMAIL], [EMAIL] and [EMAIL]; call [PHONE]"
    assert counts == {"email": 3, "phone": 1}


def test_redact_prefers_credential_over_digits_inside_it():
    key = "sk-live-4111111111111111abcdEFGH"

    redacted, counts = redact(f"key={key} ")

    assert redacted == "key=[CREDENTIAL] "
    assert counts == {"credential": 1}


def test_redact_finds_a_card_followed_by_another_number():
    redacted, counts = redact("paid with 4111 1111 1111 1111 555 times")

    assert redacted == "paid with [CARD] 555 times"
    assert counts == {"card": 1}


@pytest.mark.parametrize(
    "prefix",
    ["Grüße aus Köln, ", "日本語のテキスト、", "emoji 🙂🙂 then ", "\u00ff\u0100 "],
)
def test_redact_keeps_offsets_after_non_ascii_text(prefix):
    # Candidates are located on a one-byte-per-character copy of the text;
    # characters past U+00FF must not shift what is replaced.
    text = f"{prefix}mail ana@example.org or call +1-415-555-0134 (ref 12:30)"

    redacted, counts = redact(text)

    assert redacted == f"{prefix}mail [EMAIL] or call [PHONE] (ref 12:30)"
    assert counts == {"email": 1, "phone": 1}


def test_redact_finds_values_after_long_runs_of_other_triggers():
    # Digits, colons and parentheses that start nothing must not hide a value
    # that follows them.
    noise = "12:30 (x) 2024 + 7 : " * 20
    redacted, counts = redact(noise + "ana@example.org " + noise)

    assert redacted == noise + "[EMAIL] " + noise
    assert counts == {"email": 1}


def test_redact_handles_empty_text():
    assert redact("") == ("", {})
    assert not contains_pii("")


def test_checksums_accept_known_values_and_reject_one_digit_off():
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert iban_valid("DE89 3704 0044 0532 0130 00")
    assert not iban_valid("DE89 3704 0044 0532 0130 01")
    assert not iban_valid("DE89")
