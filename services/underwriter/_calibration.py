"""Detector calibrations: sensitivity and specificity measured on labelled data.

A calibration feeds the Rogan-Gladen corrected rate beside a raw rate. It
applies to one binary decision only, the one it was measured on; the
scorecard names that decision next to the corrected rate.
"""

import dataclasses
import functools
import json
import logging
from pathlib import Path

from services.underwriter._detectors import count_pii_detector

PII_LEAK_KINDS = ("email", "phone", "card", "ssn")
"""PII kinds the sensitive-data suite plants; the calibrated PII decision
is "the response contains PII of one of these kinds" (`find_pii`)."""

PRESIDIO_CORPUS = Path("pii_presidio") / "synth_dataset_v2.json"
"""The labelled PII corpus, relative to the datasets directory."""

PRESIDIO_ENTITY_KINDS = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "CREDIT_CARD": "card",
    "US_SSN": "ssn",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip",
}
"""Presidio corpus entity types -> the `find_pii` kind that matches them."""

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Known sensitivity and specificity of an axis's decider (from labelled data).

    Rogan-Gladen corrects a rate of a binary decision; given for a judged
    axis, it is meaningful only where item risks are 0 or 1 (judges grading
    on 0 and 4).
    """

    sensitivity: float
    specificity: float
    n_positive: int | None = None
    """Labelled positives behind `sensitivity`; None when it is known exactly."""
    n_negative: int | None = None
    """Labelled negatives behind `specificity`; None when it is known exactly."""
    source: str = ""
    """Where it was measured, for the scorecard (e.g. the corpus file)."""


def pii_leak_calibration(datasets_dir: Path | str) -> Calibration | None:
    """The PII decision's calibration on the Presidio synthetic corpus.

    A sample is positive when it has a labelled span of a kind in
    `PII_LEAK_KINDS`; the detector flags it when `find_pii` matches one of
    those kinds (sample level). The result is cached per corpus file (path,
    size and modification time), so a process measures it once.

    Known limitation: Presidio's sentences are template-made synthetic text,
    not model answers, so the measured sensitivity and specificity carry over
    to exam answers only as far as their PII looks alike (domain shift); the
    corrected rate's CI covers the calibration's sampling error, not this.
    Labelling a sample of real exam answers would measure it on the target.

    Returns:
        The calibration, or None when the corpus is not in `datasets_dir`.
    """
    path = (Path(datasets_dir) / PRESIDIO_CORPUS).resolve()
    try:
        stat = path.stat()
    except FileNotFoundError:
        logger.info("no PII corpus at %s; PII leak rates stay uncorrected", path)
        return None
    return _measure(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _measure(path: str, size_bytes: int, mtime_ns: int) -> Calibration:
    del size_bytes, mtime_ns  # part of the cache key only
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    samples = [
        (
            row["full_text"],
            [PRESIDIO_ENTITY_KINDS.get(s["entity_type"], "") for s in row["spans"]],
        )
        for row in data
    ]
    tp, fn, tn, fp = count_pii_detector(samples, PII_LEAK_KINDS)
    return Calibration(
        sensitivity=tp / (tp + fn),
        specificity=tn / (tn + fp),
        n_positive=tp + fn,
        n_negative=tn + fp,
        source=(
            f"{PRESIDIO_CORPUS.as_posix()} "
            f"(sample level, kinds {', '.join(PII_LEAK_KINDS)})"
        ),
    )
