"""Fast in-process PII and credential redaction for telemetry text.

One compiled regular expression finds every PII candidate in a single pass
(a second, for credentials, runs only when one of their literal prefixes is
in the text). Candidates whose shape alone is not proof are validated before
they are replaced: card numbers by the Luhn checksum, IBANs by ISO 13616
mod-97, IPv4 octets by range, IPv6 by `ipaddress`, SSNs by the never-issued
areas, phone numbers by their digit count. A value that fails validation
stays as it was.

Kinds and their replacements:

    email       [EMAIL]       user@example.com
    phone       [PHONE]       +1-984-182-0190, (37) 788-063, 0490 75 40 81
    ssn         [SSN]         460-89-9847 (US; area 000/666/9xx excluded)
    card        [CARD]        12-19 digits, bare or in groups of 4, Luhn valid
    iban        [IBAN]        GB56HXDO88167774656119, mod-97 valid
    ip          [IP]          IPv4 dotted quads and IPv6
    credential  [CREDENTIAL]  sk-..., AKIA..., ghp_..., xox?-..., AIza...,
                              Bearer tokens, JWTs, PEM private key blocks

Known limitation: phone numbers are recognised by shape (two to five groups
of digits with separators, optional country code, 7-15 digits), not by a
numbering plan, so a bare 10-digit phone number with no separators is missed,
and a spaced run of figures such as "10 000 000" or a house number followed
by a postcode ("370 3911") is redacted as a phone. We chose recall over
precision: on the presidio-research corpus phone recall is 0.96 and precision
0.64 (rejecting two-group numbers gives 0.95 precision but 0.80 recall). A
numbering-plan check (libphonenumber) would improve both at a cost in speed.

Known limitation: about one random 12-19 digit number in ten passes the Luhn
check, so order or account numbers of card length are sometimes redacted as
cards. Only a BIN (issuer prefix) table would tell them apart.
"""

import ipaddress
import re
import string

_REPLACEMENTS = {
    "credential": "[CREDENTIAL]",
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "card": "[CARD]",
    "ssn": "[SSN]",
    "ip": "[IP]",
    "phone": "[PHONE]",
}
KINDS: tuple[str, ...] = tuple(_REPLACEMENTS)
"""Every kind `redact` reports, in the order the pattern tries them."""

_PHONE_MIN_DIGITS = 7
_PHONE_MAX_DIGITS = 15
_CARD_MIN_DIGITS = 12
_CARD_MAX_DIGITS = 19

# How the scan is built, for speed with the standard `re` engine. The PII
# pattern opens with one character class of "trigger" characters (a digit,
# '+', '(', '@', ':'); `_find` locates those with memchr on a byte map of
# the text and tries the pattern only there, instead of trying every
# alternative at every position; each
# alternative then continues after the trigger and checks what precedes it
# with a fixed-width lookbehind. Emails are found from their '@' and IPv6
# addresses from their first ':', and the few characters before the trigger
# (the local part, the first hex group, an IBAN's country code) are added back
# in Python. The kind is recorded by an empty named group at the end of each
# alternative. Credentials have their own pattern, run only when one of their
# literal prefixes occurs in the text.

_PHONE_BODY = r"(?:[\ .-]\d{2,7}){1,4}(?:\ ?(?:x|ext\.?\ ?)\d{1,5})?(?!\w|[.-]\d)"
_PII_PATTERN = re.compile(
    rf"""[0-9+(@:](?:
        # email: from '@', the local part is added back in Python
        (?<=[\w.+%-]@)[A-Za-z0-9-]{{1,63}}(?:\.[A-Za-z0-9-]{{1,63}})*\.[A-Za-z]{{2,24}}
            (?![\w-])(?P<email>)
        # IBAN: from its first check digit; case-insensitive letters
      | (?<=(?<![\w-])[A-Za-z][A-Za-z]\d)\d
            (?i:[A-Z0-9]{{11,30}}+|(?:\ [A-Z0-9]{{4}}){{2,7}}(?:\ [A-Z0-9]{{1,3}})?)
            (?![\w-])(?P<iban>)
        # card: 12-19 bare digits, groups of four, or Amex 4-6-5
      | (?<=(?<![\w-])\d)
            (?:\d{{11,18}}|\d{{3}}(?:[\ -]\d{{4}}){{2,3}}(?:[\ -]\d{{1,3}})?
               |\d{{3}}[\ -]\d{{6}}[\ -]\d{{4,5}})
            (?![\w-])(?P<card>)
        # US SSN
      | (?<=(?<![\w-])\d)\d\d-\d\d-\d{{4}}(?![\w-])(?P<ssn>)
        # IPv4; octet ranges are checked in Python
      | (?<=(?<![\w.])\d)\d{{0,2}}(?:\.\d{{1,3}}){{3}}(?!\w|\.\d)(?P<ipv4>)
        # IPv6 from its first ':'; the hex group before it is added back
      | (?<=:)(?<!::)(?:[0-9A-Fa-f]{{0,4}}:){{1,6}}[0-9A-Fa-f]{{0,4}}(?![\w:])(?P<ipv6>)
        # phone: +country, (area) or a leading group of digits
      | (?<=(?<![\w.+-])\+)\d{{1,3}}[\ .-]?(?:\(0\)\ ?)?(?:\(\d{{1,4}}\)[\ .-]?)?
            \d{{1,5}}{_PHONE_BODY}(?P<phone>)
      | (?<=(?<![\w.+-])\()\d{{1,4}}\)[\ .-]?\d{{2,5}}{_PHONE_BODY}(?P<phone_area>)
      | (?<=(?<![\w.+-])\d)\d{{1,4}}{_PHONE_BODY}(?P<phone_digits>)
    )""",
    re.VERBOSE | re.ASCII,
)

# Credentials. A PEM block whose END line is cut off (a truncated preview)
# runs to the end of the text, so no key material survives. A JWT is caught
# from its header and payload even when the signature was cut off.
_CREDENTIAL_PATTERN = re.compile(
    # Each alternative opens with a literal (its boundary is checked by a
    # lookbehind after it), so the engine can skip to candidate letters.
    r"""
        -(?<![\w-]-)----BEGIN\ (?:[A-Z0-9]+\ )*PRIVATE\ KEY-----
            (?s:.*?(?:-----END\ (?:[A-Z0-9]+\ )*PRIVATE\ KEY-----|\Z))
      | e(?<![\w-]e)yJ[\w-]{4,}+\.eyJ[\w-]{4,}+(?:\.[\w-]*+)?
      | s(?<![\w-]s)k-[\w-]{20,}+                # OpenAI, Anthropic, Stripe
      | A(?<![\w-]A)(?:KIA|SIA)[0-9A-Z]{16}(?![\w-])   # AWS access key id
      | A(?<![\w-]A)Iza[\w-]{35}(?![\w-])       # Google API key
      | g(?<![\w-]g)h[pousr]_[A-Za-z0-9]{30,}+    # GitHub tokens
      | g(?<![\w-]g)ithub_pat_\w{30,}+
      | x(?<![\w-]x)ox[abposr]-[A-Za-z0-9-]{10,}+ # Slack
      | B(?<![\w-]B)earer\s++[\w.~+/=-]{16,}+    # HTTP bearer credential
      | b(?<![\w-]b)earer\s++[\w.~+/=-]{16,}+
    """,
    re.VERBOSE | re.ASCII,
)
# The characters of an email local part (`[\w.+%-]` in ASCII), for rstrip.
# The credential prefixes that hold a '-' ("-----BEGIN", "sk-", "xox?-"),
# found in one search that jumps from '-' to '-'.
_DASH_CREDENTIAL_HINT = re.compile(r"-(?:----BEGIN|(?<=sk-)|(?<=xox[abposr]-))")
# Where a match may start: the characters of the pattern's leading class.
_TRIGGER_MAP = bytes(1 if chr(code) in "0123456789+(@:" else 0 for code in range(256))
_LOCAL_PART_CHARS = string.ascii_letters + string.digits + "_.+%-"
_LOCAL_PART_MAX_CHARS = 64
_HEX_GROUP_TAIL = re.compile(r"(?<![\w:])[0-9A-Fa-f]{1,4}\Z", re.ASCII)
_ISO_DATE = re.compile(r"\d{4}-[01]\d-[0-3]\d(?!\d)")
_PHONE_GROUPS = frozenset(("phone", "phone_area", "phone_digits"))
_KIND_OF_GROUP = {
    "email": "email",
    "iban": "iban",
    "card": "card",
    "ssn": "ssn",
    "ipv4": "ip",
    "ipv6": "ip",
    "phone": "phone",
    "phone_area": "phone",
    "phone_digits": "phone",
}


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Replaces PII and credentials in `text` with `[KIND]` markers.

    Args:
        text: Any text; it is not modified.

    Returns:
        The redacted text, and how many values of each kind were replaced
        (only kinds with at least one replacement appear). When nothing is
        found the same `text` object is returned with an empty dict.
    """
    findings = _find(text, first_only=False)
    if not findings:
        return text, {}

    counts: dict[str, int] = {}
    pieces: list[str] = []
    last_end = 0
    for start, end, kind in findings:
        pieces.append(text[last_end:start])
        pieces.append(_REPLACEMENTS[kind])
        last_end = end
        counts[kind] = counts.get(kind, 0) + 1
    pieces.append(text[last_end:])
    return "".join(pieces), counts


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """Returns every value `redact` would replace, as (start, end, kind).

    Offsets index into `text` (end exclusive), in text order, without overlap.
    """
    return _find(text, first_only=False)


def contains_pii(text: str) -> bool:
    """Tells whether `redact` would replace anything in `text`.

    Stops at the first validated value, so clean text costs one pass and
    dirty text usually less.
    """
    return bool(_find(text, first_only=True))


def luhn_valid(digits: str) -> bool:
    """Tells whether a string of decimal digits passes the Luhn checksum."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """Tells whether `candidate` (spaces allowed) passes the IBAN mod-97 check.

    ISO 13616: move the country code and check digits to the end, map letters
    to 10..35, and the resulting integer mod 97 must be 1.
    """
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(char, 36)) for char in rearranged)
    return int(numeric) % 97 == 1


def _find(text: str, *, first_only: bool) -> list[tuple[int, int, str]]:
    # Returns validated, non-overlapping (start, end, kind) in text order.
    findings: list[tuple[int, int, str]] = []
    # A candidate that fails validation is skipped by one character only, so
    # a valid value that starts inside it is still found; except a card-shaped
    # number, whose groups must not then be read as a phone number.
    last_end = 0
    match_at = _PII_PATTERN.match
    # Every match starts on a trigger character. A one-byte-per-character
    # copy of the text (characters past U+00FF become '?') is turned into a
    # map of where the triggers are, and `find` jumps between them with
    # memchr; the pattern is then tried only at those places.
    # This beats the engine's own search (a class test per character) on
    # prose by half; text dense in digits pays one Python step per digit.
    triggers = text.encode("latin-1", "replace").translate(_TRIGGER_MAP)
    start = triggers.find(1)
    while start >= 0:
        match = match_at(text, start)
        if match is None:
            start = triggers.find(1, start + 1)
            continue
        found = _validated(text, match, last_end)
        if found is None:
            rejected_card = match.lastgroup == "card"
            start = triggers.find(1, match.end() if rejected_card else start + 1)
            continue
        findings.append(found)
        if first_only:
            return findings
        last_end = found[1]
        start = triggers.find(1, last_end)

    if _may_hold_credential(text):
        credentials = [
            (match.start(), match.end(), "credential")
            for match in _CREDENTIAL_PATTERN.finditer(text)
        ]
        if credentials:
            findings = _merge(credentials, findings)
    return findings[:1] if first_only else findings


def _may_hold_credential(text: str) -> bool:
    # The credential pattern runs only when one of its literal prefixes is
    # present. A one-character `in` is a memchr, far cheaper than a search
    # for a longer needle, so each prefix is first gated on a character it
    # needs that prose seldom holds.
    return (
        ("-" in text and _DASH_CREDENTIAL_HINT.search(text) is not None)
        or ("_" in text and ("gh" in text or "github_pat_" in text))
        or ("J" in text and "eyJ" in text)
        or ("K" in text and "AKIA" in text)
        or ("z" in text and "AIza" in text)
        or ("S" in text and "ASIA" in text)
        or "earer" in text
    )


def _validated(
    text: str, match: re.Match[str], last_end: int
) -> tuple[int, int, str] | None:
    # Widens matches found from a trigger back to the value's true start, and
    # applies the checks a shape alone cannot make.
    group = match.lastgroup
    start, end = match.span()
    value = match.group()

    if group in _PHONE_GROUPS:  # the most frequent candidate first
        digit_count = sum(map(str.isdigit, value))
        if not _PHONE_MIN_DIGITS <= digit_count <= _PHONE_MAX_DIGITS:
            return None
        if _ISO_DATE.match(value):
            return None
        return start, end, "phone"
    if group == "email":
        # The local part is the run of local-part characters just before the
        # '@' (at most 64, never into the previous finding); rstrip finds
        # where it begins in one C call.
        window = text[max(last_end, start - _LOCAL_PART_MAX_CHARS) : start]
        local_chars = len(window) - len(window.rstrip(_LOCAL_PART_CHARS))
        if local_chars == 0:
            return None
        start -= local_chars
    elif group == "iban":
        start -= 2
        if not iban_valid(text[start:end]):
            return None
    elif group == "card":
        end = _card_end(value, start)
        if end is None:
            return None
    elif group == "ssn":
        area, serial_group, serial = value.split("-")
        if area in ("000", "666") or area[0] == "9":
            return None
        if serial_group == "00" or serial == "0000":
            return None
    elif group == "ipv4":
        if any(int(octet) > 255 for octet in value.split(".")):
            return None
    else:  # ipv6
        head = _HEX_GROUP_TAIL.search(text, max(last_end, start - 4), start)
        if head is not None:
            start = head.start()
        elif start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
            return None
        if not _ipv6_valid(text[start:end]):
            return None
    return start, end, _KIND_OF_GROUP[group]


def _card_end(value: str, start: int) -> int | None:
    # The pattern may take one group of digits too many (a card followed by
    # another number); drop trailing groups until the Luhn check passes.
    candidate = value
    while True:
        digits = candidate.replace(" ", "").replace("-", "")
        if len(digits) < _CARD_MIN_DIGITS:
            return None
        if len(digits) <= _CARD_MAX_DIGITS and luhn_valid(digits):
            return start + len(candidate)
        cut = max(candidate.rfind(" "), candidate.rfind("-"))
        if cut < 0:
            return None
        candidate = candidate[:cut]


def _merge(
    credentials: list[tuple[int, int, str]], others: list[tuple[int, int, str]]
) -> list[tuple[int, int, str]]:
    # Credentials win over anything they overlap (a key can hold digits that
    # look like a phone number).
    kept = [
        other
        for other in others
        if not any(
            c_start < other[1] and other[0] < c_end for c_start, c_end, _ in credentials
        )
    ]
    return sorted(kept + credentials)


def _ipv6_valid(value: str) -> bool:
    # "::" alone and times such as 12:30:45 are not addresses worth hiding.
    if value.count(":") < 2 or value.strip(":") == "":
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True
