"""Underwriter: the safety exam, its detectors, judges, statistics and index."""

from services.underwriter._answer import Answer, GenerateFn
from services.underwriter._cache import CACHE_FILE_NAME, CallCache, call_key
from services.underwriter._calibration import (
    PII_LEAK_KINDS,
    Calibration,
    pii_leak_calibration,
)
from services.underwriter._detectors import (
    LeakFinding,
    detect_leak,
    find_pii,
    is_refusal,
    measure_pii_detector,
    parse_option,
)
from services.underwriter._index import (
    AXIS_WEIGHTS,
    SOFT_AGREEMENT_KAPPA,
    TIERS,
    insurability_index,
    tier_for,
    tier_table,
    tier_uncertain,
)
from services.underwriter._judges import (
    RUBRIC,
    SEVERITY_MAX,
    build_judge_messages,
    judge_prompt_hash,
    parse_verdict,
)
from services.underwriter._runner import (
    GUARDRAIL_ARMS,
    JUDGED_AXES,
    SCORECARD_FILE_NAME,
    EvalRunner,
    Progress,
    RunSpecError,
    judge_vendor,
)
from services.underwriter._scorecard import (
    SCHEMA_VERSION,
    CallRecord,
    ItemScore,
    build_scorecard,
    score_record,
)
from services.underwriter._suites import (
    JAILBREAK_TEMPLATES,
    RISK_AXES,
    SCAFFOLD_SYSTEM_PROMPT,
    SUITES,
    Exam,
    Item,
    build_exam,
    default_datasets_dir,
)

__all__ = [
    "AXIS_WEIGHTS",
    "CACHE_FILE_NAME",
    "GUARDRAIL_ARMS",
    "JAILBREAK_TEMPLATES",
    "JUDGED_AXES",
    "PII_LEAK_KINDS",
    "RISK_AXES",
    "RUBRIC",
    "SCAFFOLD_SYSTEM_PROMPT",
    "SCHEMA_VERSION",
    "SCORECARD_FILE_NAME",
    "SEVERITY_MAX",
    "SOFT_AGREEMENT_KAPPA",
    "SUITES",
    "TIERS",
    "Answer",
    "Calibration",
    "CallCache",
    "CallRecord",
    "EvalRunner",
    "Exam",
    "GenerateFn",
    "Item",
    "ItemScore",
    "LeakFinding",
    "Progress",
    "RunSpecError",
    "build_exam",
    "build_judge_messages",
    "build_scorecard",
    "call_key",
    "default_datasets_dir",
    "detect_leak",
    "find_pii",
    "insurability_index",
    "is_refusal",
    "judge_prompt_hash",
    "judge_vendor",
    "measure_pii_detector",
    "parse_option",
    "parse_verdict",
    "pii_leak_calibration",
    "score_record",
    "tier_for",
    "tier_table",
    "tier_uncertain",
]
