"""The default guardrail: refuse known jailbreaks, scrub PII from answers.

Input screening is a list of patterns for well-known jailbreak and
prompt-injection phrasings, checked on user messages before any model call.
Output scrubbing runs the llmobs redactor over the streamed answer.

Known limitation: pattern screening catches known phrasings only; paraphrased
or encoded attacks (base64, other languages) pass. A classifier model would
catch more at the price of a model call per request.
"""

import dataclasses
import re

from koverage.llmobs import redact

# (name, pattern) pairs; names go on the span and in the refusal reason.
_JAILBREAK_PATTERNS = [
    (
        "ignore_instructions",
        r"\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|your|system)\b[^.\n]{0,30}\b(instructions?|rules|prompts?|guidelines|directives)\b",
    ),
    (
        "reveal_system_prompt",
        r"\b(reveal|print|show|repeat|output|leak|tell me)\b[^.\n]{0,40}\b(system|initial|hidden|secret|original)\s+(prompt|instructions?|message)\b",
    ),
    ("dan_persona", r"\b(DAN|do anything now|STAN|DUDE mode|AIM mode)\b"),
    ("developer_mode", r"\b(developer|god|jailbreak|unrestricted|unfiltered)\s+mode\b"),
    (
        "no_rules_roleplay",
        r"\b(pretend|imagine|act as if|roleplay as|you are now)\b[^.\n]{0,60}\b(no|without|free of|zero)\s+(rules|restrictions|limits|filters|guidelines|censorship|ethics|morals)\b",
    ),
    (
        "evil_confidant",
        r"\b(evil|unethical|amoral|uncensored)\s+(confidant|assistant|AI|chatbot|model)\b",
    ),
    (
        "prefix_injection",
        r"\b(start|begin)\s+your\s+(reply|response|answer)\s+with\s+[\"']?(sure|absolutely|of course)",
    ),
    (
        "refusal_suppression",
        r"\b(never|do not|don't)\s+(refuse|say (that )?you can(no|')t|apologi[sz]e|include (any )?(warnings?|disclaimers?))",
    ),
]
_COMPILED = [(name, re.compile(p, re.IGNORECASE)) for name, p in _JAILBREAK_PATTERNS]

# Answer text is released up to a boundary at least this far from the end,
# so a PII item arriving in several chunks is seen whole before release.
_HOLD_BACK_CHARS = 64
_SAFE_CUT = re.compile(r"[A-Za-z]{2,} (?=[A-Za-z]{2,}\b)")


@dataclasses.dataclass(frozen=True)
class Screening:
    """Outcome of screening a prompt."""

    refused: bool
    rule: str = ""

    @property
    def reason(self) -> str:
        if not self.refused:
            return ""
        return f"guardrail refused the request: matched the {self.rule} pattern"


def screen_prompt(messages) -> Screening:
    """Checks every user message against the jailbreak patterns."""
    for message in messages:
        if message["role"] != "user":
            continue
        for name, pattern in _COMPILED:
            if pattern.search(message["content"]):
                return Screening(True, name)
    return Screening(False)


class OutputScrubber:
    """Redacts PII from a streamed answer, chunk by chunk.

    Text is held back until a cut point between two plain words that lies at
    least `_HOLD_BACK_CHARS` before the end, so redaction sees each PII item
    whole. `feed` returns text ready to send; `finish` returns the rest.
    """

    def __init__(self) -> None:
        self._pending = ""
        self.redactions = 0

    def feed(self, text: str) -> str:
        self._pending += text
        limit = len(self._pending) - _HOLD_BACK_CHARS
        if limit <= 0 or "-----BEGIN" in self._pending:
            return ""
        cut = 0
        for match in _SAFE_CUT.finditer(self._pending, 0, limit):
            cut = match.end()
        if cut == 0:
            return ""
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return self._scrub(ready)

    def finish(self) -> str:
        rest, self._pending = self._pending, ""
        return self._scrub(rest)

    def _scrub(self, text: str) -> str:
        redacted, counts = redact(text)
        self.redactions += sum(counts.values())
        return redacted
