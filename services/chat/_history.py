"""Which stored messages go to the model: the history rule.

The rule, in full (a user can predict what the model sees):

1. A turn is a user message and the assistant answer stored after it. Only
   turns whose answer is `complete`, or `cancelled` with some text, are
   history; refused and failed turns are never sent again, so one refusal
   or provider error does not poison the conversation.
2. Tokens are estimated per message as ceil(ASCII characters / 4), plus
   one token for every character outside ASCII (CJK, accents, emoji), plus
   4 for the role framing. Tokenizers pack English text at about 4
   characters a token but spend one or more tokens on each CJK character,
   so counting those 4 to a token would overfill the window several times
   over. This is an estimate: providers count with their own tokenizers,
   so the window is never filled to the last token.
3. The answer reserve is the request's `max_output_tokens`, or else
   min(1024, window / 2) tokens. The prompt budget is the model's context
   window minus that reserve.
4. The system prompt and the new user message are always sent. If they
   alone exceed the budget, the turn is refused with INVALID_ARGUMENT and
   nothing is stored.
5. Earlier turns are added newest first, whole turns only, while they fit;
   the first turn that does not fit and every older one are dropped.
   `history_messages_dropped` counts the messages dropped this way (not
   the refused or failed turns left out by rule 1).
"""

import dataclasses
import itertools
import math

from koverage.errors import InvalidArgumentError
from services.chat._store import MessageRecord

CHARS_PER_TOKEN = 4
"""ASCII characters per estimated token; every other character is one."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Estimated tokens per message for role framing."""

DEFAULT_OUTPUT_RESERVE_TOKENS = 1024
"""Answer reserve when the request sets no max_output_tokens (at most half
the window)."""


@dataclasses.dataclass(frozen=True)
class PromptPlan:
    """The messages sent to the router for one turn."""

    messages: tuple[dict[str, str], ...]
    """Role/content dicts, oldest first: system, kept history, new message."""

    history_messages_dropped: int
    """History messages left out to fit the context window."""

    estimated_prompt_tokens: int
    """Estimated tokens of `messages`."""


def estimate_tokens(text: str) -> int:
    """Estimated tokens of one message: its text (`estimate_text_tokens`)
    plus 4 for the role framing."""
    return estimate_text_tokens(text) + MESSAGE_OVERHEAD_TOKENS


def estimate_text_tokens(text: str) -> int:
    """Estimated tokens of text alone: ceil(ASCII characters / 4) plus one
    per character outside ASCII."""
    if text.isascii():
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / CHARS_PER_TOKEN) + len(text) - ascii_chars


def plan_prompt(
    *,
    system_prompt: str,
    history: list[MessageRecord],
    new_content: str,
    model: str,
    context_window_tokens: int,
    max_output_tokens: int | None,
) -> PromptPlan:
    """Applies the history rule of this module.

    Raises:
        InvalidArgumentError: The reserve leaves no room for a prompt, or the
            system prompt and new message alone do not fit.
    """
    if max_output_tokens is not None:
        reserve = max_output_tokens
    else:
        reserve = min(DEFAULT_OUTPUT_RESERVE_TOKENS, context_window_tokens // 2)
    budget = context_window_tokens - reserve
    if budget <= 0:
        raise InvalidArgumentError(
            f"max_output_tokens={max_output_tokens} leaves no room for the prompt "
            f"in {model}'s context window of {context_window_tokens} tokens; "
            "lower it",
            field="max_output_tokens",
        )

    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    tail = {"role": "user", "content": new_content}
    used = sum(estimate_tokens(m["content"]) for m in [*head, tail])
    if used > budget:
        raise InvalidArgumentError(
            f"the message needs about {used} tokens with the system prompt, more "
            f"than the {budget} that {model}'s context window of "
            f"{context_window_tokens} tokens leaves after reserving {reserve} for "
            "the answer; shorten it, lower max_output_tokens or pick a model "
            "with a larger window",
            field="content",
        )

    turns = history_turns(history)
    kept: list[dict[str, str]] = []
    kept_turns = 0
    for turn in reversed(turns):
        cost = sum(estimate_tokens(m["content"]) for m in turn)
        if used + cost > budget:
            break
        kept[:0] = turn
        used += cost
        kept_turns += 1
    dropped = 2 * (len(turns) - kept_turns)
    return PromptPlan((*head, *kept, tail), dropped, used)


def history_turns(history: list[MessageRecord]) -> list[list[dict[str, str]]]:
    """Turns eligible as history (rule 1), oldest first, as message pairs."""
    turns: list[list[dict[str, str]]] = []
    for previous, current in itertools.pairwise(history):
        if previous.role != "user" or current.role != "assistant":
            continue
        usable = current.status == "complete" or (
            current.status == "cancelled" and current.content
        )
        if usable:
            turns.append(
                [
                    {"role": "user", "content": previous.content},
                    {"role": "assistant", "content": current.content},
                ]
            )
    return turns
