"""Counts of lost telemetry, from this process and other services' /metrics.

What the dashboard can see, and from where:

- `koverage_spans_dropped_total{reason}`: spans a process lost before export
  (llmobs). Each process counts its own, so the dashboard reads this
  process's registry and scrapes the `/metrics` URLs it is given.
- `koverage_ingest_spans_rejected_total{tenant}`: spans ingest refused
  (validation, redaction leaks); scraped from ingest's `/metrics`, shown for
  the viewer's tenant only.
- `koverage_worker_records_total{outcome="dead_lettered"}`: records the worker
  sent to the dead-letter topic; read from this process's registry, since
  the dashboard runs inside the worker.

Known limitation: the services' metrics ports are picked at start-up and
no registry of them exists, so only the URLs passed to `start_dashboard`
are scraped; drops in a process whose URL is not given are invisible, and
a restarted process starts its counters at zero. A durable drop table
written by ingest would fix both.
"""

import asyncio
import logging
from collections.abc import Iterable, Sequence

import aiohttp
import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

_SCRAPE_TIMEOUT_S = 1.5
_DROPPED = "koverage_spans_dropped_total"
_REJECTED = "koverage_ingest_spans_rejected_total"
_WORKER_RECORDS = "koverage_worker_records_total"

logger = logging.getLogger(__name__)


async def collect_drops(
    session: aiohttp.ClientSession, metrics_urls: Sequence[str], tenant: str
) -> dict:
    """Sums the loss counters over this process and every reachable URL.

    Returns:
        {"dropped_before_export": {reason: n}, "dropped_total": n,
        "ingest_rejected": n, "dead_lettered": n, "sources": [{"url",
        "ok", "error"}]}; a URL that cannot be read is listed with ok=False
        and contributes nothing.
    """
    totals = {"dropped": {}, "rejected": 0.0, "dead_lettered": 0.0}
    _add_samples(totals, _local_samples(), tenant)

    results = await asyncio.gather(
        *(_scrape(session, url) for url in metrics_urls), return_exceptions=True
    )
    sources = []
    for url, result in zip(metrics_urls, results, strict=True):
        if isinstance(result, BaseException):
            sources.append({"url": url, "ok": False, "error": _describe(result)})
            continue
        _add_samples(totals, result, tenant)
        sources.append({"url": url, "ok": True, "error": ""})

    dropped = {reason: int(n) for reason, n in sorted(totals["dropped"].items())}
    return {
        "dropped_before_export": dropped,
        "dropped_total": sum(dropped.values()),
        "ingest_rejected": int(totals["rejected"]),
        "dead_lettered": int(totals["dead_lettered"]),
        "sources": sources,
    }


def _local_samples() -> Iterable[tuple[str, dict, float]]:
    for family in prometheus_client.REGISTRY.collect():
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value


async def _scrape(
    session: aiohttp.ClientSession, url: str
) -> list[tuple[str, dict, float]]:
    timeout = aiohttp.ClientTimeout(total=_SCRAPE_TIMEOUT_S)
    async with session.get(url, timeout=timeout) as response:
        response.raise_for_status()
        text = await response.text()
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _add_samples(totals: dict, samples, tenant: str) -> None:
    for name, labels, value in samples:
        if name == _DROPPED:
            reason = labels.get("reason", "unknown")
            totals["dropped"][reason] = totals["dropped"].get(reason, 0.0) + value
        elif name == _REJECTED and labels.get("tenant") == tenant:
            totals["rejected"] += value
        elif name == _WORKER_RECORDS and labels.get("outcome") == "dead_lettered":
            totals["dead_lettered"] += value


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
