"""Decodes batches of span records into COPY tuples, in child processes.

Decoding a record (protobuf, attributes, JSON) is the worker's largest
cost in Python. Done on a thread of the consumer's process it holds the
GIL that the writer thread needs for every row it sends, and the two slow
each other down (measured: both took about twice their time alone). Here
each batch is split into one slice per child process; a child decodes its
slice with `decode_record` (through the C fast path where it applies) and
encodes the rows as binary COPY tuples (`services.worker._copy_encode`), so
what comes back is a few buffers the writer sends as they are.

Children run at a lower CPU priority (niceness 10) than the consumer and
writer threads, and exit on their own if the worker dies without closing
the pool.

`DecodePool(0)` does the same work on the calling thread, for tests and
for a worker given a single CPU.

Children start with the "spawn" method: the worker's process runs
librdkafka, gRPC and psycopg threads, which a forked child would inherit
in whatever state they were in.
"""

import array
import concurrent.futures
import concurrent.futures.process
import logging
import multiprocessing
import os
import struct
import threading
import time
from typing import NamedTuple

from services.worker._copy_encode import (
    EncodedRows,
    encode_llm_call_row,
    encode_span_row,
)
from services.worker._decode import UndecodableRecord, decode_record

_DECODE_NICENESS = 10
_ORPHAN_CHECK_S = 1.0

logger = logging.getLogger(__name__)


class EncodedBatch(NamedTuple):
    """What a batch of record values became, in record order.

    `rows` holds the COPY tuples of every record that decoded, and
    `decoded` each such record's index in the batch; `span_ends[k]` and
    `llm_call_ends[k]` are where the k-th decoded record's tuples end in
    `rows.spans` and `rows.llm_calls` (`one(k)` cuts them out). `rejected`
    holds (index, reason) for each record that did not decode. Everything
    is bytes, ints and arrays so that the batch crosses from a child
    process as a few buffers.
    """

    rows: EncodedRows
    decoded: array.array
    span_ends: array.array
    llm_call_ends: array.array
    rejected: list[tuple[int, str]]

    def one(self, k: int) -> EncodedRows:
        """The tuples of the k-th decoded record alone."""
        span_start = self.span_ends[k - 1] if k else 0
        llm_start = self.llm_call_ends[k - 1] if k else 0
        llm_end = self.llm_call_ends[k]
        return EncodedRows(
            self.rows.spans[span_start : self.span_ends[k]],
            1,
            self.rows.llm_calls[llm_start:llm_end],
            int(llm_end > llm_start),
        )


def encode_batch(values: list[bytes | None], first_index: int = 0) -> EncodedBatch:
    """Decodes and encodes `values`; indexes in the result start at `first_index`."""
    spans, llm_calls = [], []
    decoded = array.array("q")
    span_ends, llm_call_ends = array.array("q"), array.array("q")
    rejected = []
    span_end = llm_call_end = 0
    for index, value in enumerate(values, first_index):
        try:
            span, llm_call = decode_record(value)
            span_tuple = encode_span_row(span)
            llm_tuple = b"" if llm_call is None else encode_llm_call_row(llm_call)
        except UndecodableRecord as exc:
            rejected.append((index, str(exc)))
            continue
        except (ValueError, OverflowError, struct.error) as exc:
            # A value outside its column's type (a smallint past 32767).
            rejected.append((index, f"span does not fit the table: {exc}"))
            continue
        decoded.append(index)
        spans.append(span_tuple)
        span_end += len(span_tuple)
        span_ends.append(span_end)
        if llm_tuple:
            llm_calls.append(llm_tuple)
            llm_call_end += len(llm_tuple)
        llm_call_ends.append(llm_call_end)
    rows = EncodedRows(b"".join(spans), len(spans), b"".join(llm_calls), len(llm_calls))
    return EncodedBatch(rows, decoded, span_ends, llm_call_ends, rejected)


class DecodePool:
    """Decodes batches in `processes` child processes, or inline when 0.

    Args:
        processes: Child processes; 0 decodes on the thread that calls
            `decode`.

    Raises:
        ValueError: `processes` is negative.
    """

    def __init__(self, processes: int) -> None:
        if processes < 0:
            raise ValueError(f"processes={processes} must be >= 0")
        self._processes = processes
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        if processes:
            self._executor = self._new_executor()

    def start(self) -> None:
        """Spawns the children now, not at the first batch.

        Each takes ~0.5 s to import; this returns once one of them is ready.
        """
        if self._executor is not None:
            warm = [
                self._executor.submit(encode_batch, []) for _ in range(self._processes)
            ]
            for future in warm:
                future.result()

    def decode(self, values: list[bytes | None]) -> "DecodedBatch":
        """Starts decoding `values`; the result's `result()` waits for it.

        Thread-safe. A pool broken by a child's death is started afresh
        here; the batches it held fail with `BrokenProcessPool`.
        """
        if self._executor is None or not values:
            return DecodedBatch([_done(encode_batch(values))])
        with self._lock:
            try:
                return self._submit(values)
            except concurrent.futures.process.BrokenProcessPool:
                logger.error("a decode process died; starting the pool again")
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
                return self._submit(values)

    def close(self) -> None:
        """Stops the children (after the slices already submitted)."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None

    def _new_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_child,
        )

    def _submit(self, values: list[bytes | None]) -> "DecodedBatch":
        slice_size = -(-len(values) // self._processes)  # ceiling division
        return DecodedBatch(
            [
                self._executor.submit(
                    encode_batch, values[start : start + slice_size], start
                )
                for start in range(0, len(values), slice_size)
            ]
        )


class DecodedBatch:
    """A batch being decoded, slice by slice."""

    def __init__(self, slices: list[concurrent.futures.Future]) -> None:
        self._slices = slices

    def result(self) -> EncodedBatch:
        """Waits for every slice; the batch's rows in record order.

        Raises:
            concurrent.futures.process.BrokenProcessPool: a child died.
        """
        if len(self._slices) == 1:
            return self._slices[0].result()
        return _joined([future.result() for future in self._slices])


def _joined(parts: list[EncodedBatch]) -> EncodedBatch:
    """Slices' results as one batch (their indexes are the batch's already)."""
    decoded = array.array("q")
    span_ends, llm_call_ends = array.array("q"), array.array("q")
    rejected = []
    span_base = llm_base = 0
    for part in parts:
        decoded.extend(part.decoded)
        span_ends.extend(end + span_base for end in part.span_ends)
        llm_call_ends.extend(end + llm_base for end in part.llm_call_ends)
        rejected.extend(part.rejected)
        span_base += len(part.rows.spans)
        llm_base += len(part.rows.llm_calls)
    rows = EncodedRows(
        b"".join(p.rows.spans for p in parts),
        sum(p.rows.span_count for p in parts),
        b"".join(p.rows.llm_calls for p in parts),
        sum(p.rows.llm_call_count for p in parts),
    )
    return EncodedBatch(rows, decoded, span_ends, llm_call_ends, rejected)


def _start_child() -> None:
    # Decoding is throughput work with batches queued ahead of the writer;
    # the consumer thread (heartbeats, commits), the TelemetryService and,
    # on a shared machine, Postgres should get a core first.
    os.nice(_DECODE_NICENESS)
    # A child blocked on the pool's queue outlives a parent that was killed
    # (it holds the queue's write end too); it leaves when orphaned.
    threading.Thread(
        target=_exit_when_orphaned, args=(os.getppid(),), daemon=True
    ).start()


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_ORPHAN_CHECK_S)
    os._exit(0)


def _done(value) -> concurrent.futures.Future:
    future = concurrent.futures.Future()
    future.set_result(value)
    return future
