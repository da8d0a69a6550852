"""Supervisor: readiness, logs, death detection, ordered and complete teardown."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from koverage.local import (
    ChildExit,
    ProcessDiedError,
    ProcessStartError,
    Supervisor,
    free_port,
    start_service,
    tcp_ready,
)
from tests.engines import child_pids, pid_alive

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def _wait_until(condition, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_child_output_goes_to_its_log_file(tmp_path):
    with Supervisor(tmp_path) as supervisor:
        child = supervisor.start_process(
            "talker",
            _python("""
                import sys, time
                print("hello from stdout", flush=True)
                print("hello from stderr", file=sys.stderr, flush=True)
                time.sleep(60)
            """),
        )
        assert _wait_until(lambda: "stderr" in child.log_path.read_text())

    text = (tmp_path / "talker.log").read_text()
    assert "hello from stdout" in text
    assert "hello from stderr" in text


def test_start_waits_for_the_readiness_probe(tmp_path):
    marker = tmp_path / "ready.flag"
    with Supervisor(tmp_path) as supervisor:
        supervisor.start_process(
            "slow",
            _python(f"""
                import pathlib, time
                time.sleep(0.5)
                pathlib.Path({str(marker)!r}).write_text("up")
                time.sleep(60)
            """),
            ready=marker.exists,
        )
        assert marker.exists()


def test_child_exiting_before_ready_raises_with_its_output(tmp_path):
    with Supervisor(tmp_path) as supervisor:
        with pytest.raises(ProcessStartError) as caught:
            supervisor.start_process(
                "crasher",
                _python("import sys; print('config is broken'); sys.exit(3)"),
                ready=lambda: False,
            )
        assert supervisor.processes == []

    assert "status 3" in str(caught.value)
    assert "config is broken" in str(caught.value)


def test_child_not_ready_in_time_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    with (
        Supervisor(tmp_path) as supervisor,
        pytest.raises(ProcessStartError, match="not ready within"),
    ):
        supervisor.start_process(
            "never-ready",
            _python(f"""
                import os, pathlib, time
                pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))
                time.sleep(60)
            """),
            ready=lambda: False,
            ready_timeout_s=1.0,
        )

    assert not pid_alive(int(pid_file.read_text()))


def test_child_dying_after_ready_is_reported(tmp_path):
    reported: list[ChildExit] = []
    with Supervisor(tmp_path, on_exit=reported.append) as supervisor:
        child = supervisor.start_process(
            "short-lived", _python("import time, sys; time.sleep(0.3); sys.exit(7)")
        )
        supervisor.check()  # still running: nothing to report yet

        exit_record = supervisor.wait_for_exit(timeout_s=15)

        assert exit_record == ChildExit("short-lived", child.pid, 7, child.log_path)
        assert _wait_until(lambda: reported == [exit_record])
        with pytest.raises(ProcessDiedError, match="short-lived"):
            supervisor.check()


def test_stop_does_not_report_children_as_died(tmp_path):
    supervisor = Supervisor(tmp_path)
    supervisor.start_process("sleeper", _python("import time; time.sleep(60)"))

    supervisor.stop()

    assert supervisor.exits == []
    assert supervisor.wait_for_exit(timeout_s=0.2) is None


def test_stop_goes_in_reverse_start_order(tmp_path):
    order_file = tmp_path / "order"
    handler = f"""
        import pathlib, signal, sys, time
        def leave(signum, frame):
            with open({str(order_file)!r}, "a") as f:
                f.write(sys.argv[1] + "\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, leave)
        pathlib.Path(sys.argv[2]).touch()
        while True:
            time.sleep(1)
    """
    with Supervisor(tmp_path) as supervisor:
        for name in ("first", "second", "third"):
            marker = tmp_path / f"{name}.ready"
            supervisor.start_process(
                name, _python(handler) + [name, str(marker)], ready=marker.exists
            )

    assert order_file.read_text().split() == ["third", "second", "first"]


def test_stop_kills_grandchildren_and_stubborn_children(tmp_path):
    grandchild_file = tmp_path / "grandchild"
    with Supervisor(tmp_path) as supervisor:
        child = supervisor.start_process(
            "stubborn",
            _python(f"""
                import pathlib, signal, subprocess, sys, time
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                grandchild = subprocess.Popen([sys.executable, "-c",
                    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
                pathlib.Path({str(grandchild_file)!r}).write_text(str(grandchild.pid))
                time.sleep(60)
            """),
            ready=grandchild_file.exists,
            stop_timeout_s=0.5,
        )
        grandchild_pid = int(grandchild_file.read_text())
        assert pid_alive(grandchild_pid)

        status = supervisor.stop_process("stubborn")

    assert status == -signal.SIGKILL
    assert not pid_alive(child.pid)
    assert _wait_until(lambda: not pid_alive(grandchild_pid))


@pytest.mark.parametrize(
    "parent_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
)
def test_no_child_outlives_a_signalled_parent(tmp_path, parent_signal):
    # The parent: a supervisor with two children, waiting to be signalled.
    parent_script = textwrap.dedent(f"""
        import sys, time
        from koverage.local import Supervisor, handle_termination_signals
        handle_termination_signals()
        supervisor = Supervisor({str(tmp_path)!r})
        for name in ("a", "b"):
            child = supervisor.start_process(
                name, [sys.executable, "-c", "import time; time.sleep(120)"])
            print(child.pid, flush=True)
        print("up", flush=True)
        while True:
            time.sleep(0.1)
    """)
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=_REPO_ROOT,
    )
    try:
        pids = [int(parent.stdout.readline()), int(parent.stdout.readline())]
        assert parent.stdout.readline().strip() == "up"
        assert all(pid_alive(pid) for pid in pids)

        parent.send_signal(parent_signal)
        parent.wait(timeout=30)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()

    assert _wait_until(lambda: not any(pid_alive(pid) for pid in pids))


def test_start_service_waits_for_grpc_health_serving(tmp_path):
    # A stand-in service module: health turns SERVING only after a delay.
    port = free_port()
    (tmp_path / "fake_service.py").write_text(
        textwrap.dedent(f"""
            import time
            from concurrent import futures
            import grpc
            from grpc_health.v1 import health, health_pb2, health_pb2_grpc
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            servicer = health.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
            server.add_insecure_port("127.0.0.1:{port}")
            server.start()
            servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            time.sleep(0.5)
            with open("serving.flag", "w") as flag:
                flag.write("now")
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            server.wait_for_termination()
        """)
    )
    with Supervisor(tmp_path / "logs") as supervisor:
        service = start_service(
            supervisor,
            "fake",
            f"127.0.0.1:{port}",
            module="fake_service",
            cwd=tmp_path,
            env={"KOVERAGE_EXAMPLE": "1"},
        )

        assert (tmp_path / "serving.flag").exists()
        assert service.is_running()
        assert supervisor["fake"] is service
    assert not pid_alive(service.pid)


def test_duplicate_or_malformed_names_are_refused(tmp_path):
    with Supervisor(tmp_path) as supervisor:
        supervisor.start_process("one", _python("import time; time.sleep(60)"))
        with pytest.raises(ValueError, match="already running"):
            supervisor.start_process("one", _python("pass"))
        with pytest.raises(ValueError, match="not allowed"):
            supervisor.start_process("../escape", _python("pass"))


def test_free_port_can_be_bound(tmp_path):
    port = free_port()

    probe = tcp_ready("127.0.0.1", port)
    assert not probe()
    with Supervisor(tmp_path) as supervisor:
        supervisor.start_process(
            "listener",
            _python(f"""
                import socket, time
                s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen()
                time.sleep(60)
            """),
            ready=probe,
        )
        assert probe()


def test_child_pids_lists_direct_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in child_pids(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
