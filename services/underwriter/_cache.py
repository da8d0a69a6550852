"""On-disk cache of model answers and judge verdicts (append-only JSONL)."""

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from services.underwriter._answer import Answer

CACHE_FILE_NAME = "calls.jsonl"
"""File name of the cache inside a run's output directory."""

logger = logging.getLogger(__name__)


def call_key(
    *,
    role: str,
    model: str,
    endpoint: str,
    messages: list[dict[str, str]],
    temperature: float,
    seed: int,
    guardrail_arm: str,
    judge_prompt_hash: str = "",
    subject: str = "",
) -> str:
    """sha256 of everything that decides a call's answer.

    Covers the model, its endpoint, the messages, the parameters, the
    guardrail arm and, for verdicts, the judge prompt's hash, so a changed
    rubric never reuses stale verdicts. For a verdict, `guardrail_arm` is
    the arm of the judged answer and `subject` names that answer (model and
    temperature), so each answer gets its own verdicts even when two answers
    have the same text; within one run no two calls share a key.
    """
    payload = {
        "role": role,
        "model": model,
        "endpoint": endpoint,
        "messages": messages,
        "params": {"temperature": float(temperature), "seed": int(seed)},
        "guardrail_arm": guardrail_arm,
        "judge_prompt_hash": judge_prompt_hash,
        "subject": subject,
    }
    raw = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


class CallCache:
    """Answers by call key, loaded from and appended to one JSONL file.

    Each finished call is appended and flushed at once, so an interrupted run
    loses at most the calls in flight. A torn last line (the process died
    mid-write) is skipped on load. When a key appears twice (a retried
    error), the later line wins.

    Known limitation: the file is opened by one runner at a time; two runs
    writing to the same output directory concurrently could interleave
    lines. Give each run its own directory, or add a file lock.
    """

    def __init__(self, directory: Path | str) -> None:
        self._path = Path(directory) / CACHE_FILE_NAME
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, Answer] = {}
        if self._path.exists():
            self._load()

    @property
    def path(self) -> Path:
        """The JSONL file."""
        return self._path

    def get(self, key: str) -> Answer | None:
        """The cached answer for `key`, or None."""
        return self._entries.get(key)

    def put(self, key: str, answer: Answer, context: dict[str, Any]) -> None:
        """Stores and appends one answer; `context` is kept for humans only."""
        self._entries[key] = answer
        line = json.dumps(
            {"key": key, "answer": dataclasses.asdict(answer), "context": context},
            ensure_ascii=False,
        )
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    def __len__(self) -> int:
        return len(self._entries)

    def _load(self) -> None:
        skipped = 0
        with open(self._path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                    self._entries[record["key"]] = Answer(**record["answer"])
                except (ValueError, KeyError, TypeError):
                    skipped += 1
        if skipped:
            logger.warning(
                "skipped %d unreadable cache lines in %s", skipped, self._path
            )
