"""Property: values planted in prose never survive redaction."""

import ipaddress
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from koverage.llmobs import redact

_DIGITS = string.digits
_ALNUM = string.ascii_letters + string.digits
# Filler holds no digits, '@' or ':', so it cannot form a value itself.
_WORDS = st.text(alphabet=string.ascii_letters, min_size=1, max_size=12)
_PUNCT = st.sampled_from([" ", ", ", ". ", "; ", " (", ") ", "\n"])


def _luhn_complete(body: str) -> str:
    total = 0
    for position, char in enumerate(reversed(body)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return body + str((10 - total % 10) % 10)


def _iban(bban: str) -> str:
    numeric = "".join(str(int(char, 36)) for char in bban + "GB00")
    return f"GB{98 - int(numeric) % 97:02d}{bban}"


@st.composite
def _cards(draw):
    digits = _luhn_complete(draw(st.text(_DIGITS, min_size=15, max_size=15)))
    separator = draw(st.sampled_from(["", " ", "-"]))
    return separator.join(digits[i : i + 4] for i in range(0, 16, 4))


@st.composite
def _ssns(draw):
    area = draw(st.integers(1, 899).filter(lambda n: n != 666))
    group = draw(st.integers(1, 99))
    serial = draw(st.integers(1, 9999))
    return f"{area:03d}-{group:02d}-{serial:04d}"


@st.composite
def _phones(draw):
    a, b, c = (draw(st.text(_DIGITS, min_size=n, max_size=n)) for n in (3, 3, 4))
    layout = draw(
        st.sampled_from(["+1-{}-{}-{}", "({}) {}-{}", "{} {} {}", "{}.{}.{}"])
    )
    return layout.format(a, b, c)


@st.composite
def _ibans(draw):
    bank = draw(st.text(string.ascii_uppercase, min_size=4, max_size=4))
    return _iban(bank + draw(st.text(_DIGITS, min_size=14, max_size=14)))


_EMAILS = st.builds(
    "{}{}@{}.{}".format,
    st.text(string.ascii_lowercase, min_size=1, max_size=1),
    st.text(string.ascii_lowercase + _DIGITS + "._", max_size=15),
    st.text(string.ascii_lowercase, min_size=1, max_size=10),
    st.text(string.ascii_lowercase, min_size=2, max_size=6),
)
_IPV4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_IPV6 = st.integers(2**100, 2**128 - 1).map(
    lambda n: ipaddress.IPv6Address(n).compressed
)
_CREDENTIALS = st.one_of(
    st.text(_ALNUM, min_size=24, max_size=48).map(lambda s: "sk-" + s),
    st.text(string.ascii_uppercase + _DIGITS, min_size=16, max_size=16).map(
        lambda s: "AKIA" + s
    ),
    st.text(_ALNUM, min_size=36, max_size=36).map(lambda s: "ghp_" + s),
)
_VALUES = st.one_of(
    _EMAILS, _cards(), _ssns(), _phones(), _ibans(), _IPV4, _IPV6, _CREDENTIALS
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_WORDS, _PUNCT, _VALUES, _PUNCT), min_size=1, max_size=6))
def test_no_planted_value_survives_redaction(parts):
    text = "".join(
        word + before + value + after for word, before, value, after in parts
    )

    redacted, counts = redact(text)

    for _word, _before, value, _after in parts:
        assert value not in redacted
    assert sum(counts.values()) >= 1
