"""Decoding batches in child processes: same rows as inline, survives a dead child."""

import concurrent.futures.process
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.worker import decode_record, encode_rows
from services.worker._decode_pool import DecodePool, encode_batch
from tests.ingest.otlp import llm_attributes, make_span
from tests.worker.conftest import envelope


def _mixed_batch() -> list[bytes | None]:
    """LLM and plain spans with undecodable and unstorable records among them."""
    values: list[bytes | None] = []
    for i in range(40):
        if i % 4 == 0:
            values.append(envelope(make_span("chat m", attributes=llm_attributes())))
        else:
            values.append(envelope(make_span(f"step {i}")))
    values[7] = b"\xff\xff not protobuf"
    values[13] = None
    wide = make_span("wide")
    wide.kind = 40_000  # past smallint
    values[22] = envelope(wide)
    return values


@pytest.fixture
def pool():
    decode_pool = DecodePool(2)
    decode_pool.start()
    yield decode_pool
    decode_pool.close()


def test_children_give_the_rows_and_rejects_an_inline_decode_gives(pool):
    values = _mixed_batch()
    inline = encode_batch(values)
    pooled = pool.decode(values).result()

    assert pooled == inline
    assert [i for i, _ in pooled.rejected] == [7, 13, 22]
    assert "does not fit" in dict(pooled.rejected)[22]
    assert list(pooled.decoded) == [i for i in range(40) if i not in (7, 13, 22)]
    # Each decoded record's own tuples can be cut out again (for the
    # one-by-one fallback), across the slices' boundary too.
    for k, index in enumerate(pooled.decoded):
        assert pooled.one(k) == encode_rows([decode_record(values[index])])
    assert pooled.rows.span_count == 37 and pooled.rows.llm_call_count == 10


def test_children_run_at_a_lower_priority(pool):
    children = multiprocessing.active_children()
    assert len(children) == 2
    # A child lowers its priority as it starts, which may be just after
    # the warm-up batches ran on its sibling.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        os.getpriority(os.PRIO_PROCESS, c.pid) < os.nice(0) + 10 for c in children
    ):
        time.sleep(0.05)
    for child in children:
        assert os.getpriority(os.PRIO_PROCESS, child.pid) >= os.nice(0) + 10


def test_a_killed_child_is_replaced_and_the_batch_decodes_again(pool):
    values = _mixed_batch()
    victim = multiprocessing.active_children()[0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)

    # The batch the dead child held, if any, fails as a whole; the next
    # decode starts a fresh pool.
    results = []
    for _ in range(3):
        try:
            results.append(pool.decode(values).result())
        except concurrent.futures.process.BrokenProcessPool:
            continue
    assert results and all(r == encode_batch(values) for r in results)
    assert victim.pid not in {c.pid for c in multiprocessing.active_children()}


def test_no_children_decodes_on_the_calling_thread():
    pool = DecodePool(0)
    values = _mixed_batch()
    assert pool.decode(values).result() == encode_batch(values)
    assert pool.decode([]).result().rows.span_count == 0
    pool.close()


def test_a_negative_process_count_is_refused():
    with pytest.raises(ValueError, match="processes=-1"):
        DecodePool(-1)


def test_children_leave_when_the_worker_is_killed():
    script = (
        "import multiprocessing, time\n"
        "from services.worker._decode_pool import DecodePool\n"
        "pool = DecodePool(2)\n"
        "pool.start()\n"
        "time.sleep(0.5)\n"
        "print(*[c.pid for c in multiprocessing.active_children()], flush=True)\n"
        "time.sleep(60)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the killed run's resource tracker complains
        text=True,
    )
    try:
        children = [int(pid) for pid in worker.stdout.readline().split()]
        assert len(children) == 2
    finally:
        worker.kill()
        worker.wait(10)
        worker.stdout.close()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        state = stat.rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
