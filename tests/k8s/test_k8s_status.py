"""Pure parts of the executor: how a pod's status ends an attempt, and how its log stream is split."""

from __future__ import annotations

import random

import pytest

from aihub.engine.executors.k8s_logs import LogSink
from aihub.engine.executors.k8s_outputs import Marks
from aihub.engine.executors.k8s_status import ended

MARK = "::aihub-0123456789abcdef::"


def pod(*, phase: str = "Running", main: dict | None = None, init: dict | None = None, **status: str) -> dict:
    body: dict = {"phase": phase, **status}
    if main is not None:
        body["containerStatuses"] = [{"name": "main", "state": main}]
    if init is not None:
        body["initContainerStatuses"] = [{"name": "aihub-init", "state": init}]
    return {"metadata": {"name": "p"}, "status": body}


def test_running_and_pending_pods_have_not_ended() -> None:
    assert ended(pod(main={"running": {"startedAt": "2025-01-01T00:00:00Z"}}), False, False) is None
    assert ended(pod(phase="Pending"), False, False) is None
    assert ended(None, False, False) is None


def test_the_main_containers_exit_code_ends_it() -> None:
    end = ended(
        pod(
            phase="Failed",
            main={
                "terminated": {
                    "exitCode": 3,
                    "reason": "Error",
                    "startedAt": "2025-01-01T00:00:00Z",
                    "finishedAt": "2025-01-01T00:00:05Z",
                }
            },
        ),
        False,
        False,
    )
    assert end is not None and (end.exit_code, end.error) == (3, None)
    assert end.finished_at is not None and (end.finished_at - end.started_at).total_seconds() == 5


def test_oom_kills_say_so() -> None:
    end = ended(pod(main={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}), False, False)
    assert end is not None and end.exit_code == 137
    assert end.error is not None and "OOMKilled" in end.error


def test_a_failed_init_container_or_an_eviction_is_an_error_without_exit_code() -> None:
    init = ended(pod(phase="Failed", init={"terminated": {"exitCode": 1, "reason": "Error"}}), False, False)
    assert init is not None and init.exit_code is None
    assert init.error == "init container aihub-init failed: exited with code 1 (Error)"
    evicted = ended(pod(phase="Failed", reason="Evicted", message="low on memory"), False, False)
    assert evicted is not None and evicted.error == "the pod failed: Evicted: low on memory"


def test_a_vanished_pod() -> None:
    assert ended(None, True, True) is not None and ended(None, True, True).error is None  # type: ignore[union-attr]
    lost = ended(pod(phase="Running"), True, False)
    assert lost is not None and lost.error == "the pod was deleted before its command ended"


STREAM = (
    b"first line\n"
    + b"x" * 3_000_000  # a long line, no newline for a while
    + b"\nno newline at the end"
    + f"{MARK} exit 0\n".encode()
    + f"{MARK} text o aGVsbG8K\n".encode()
    + f"{MARK} text-end o\n".encode()
    + f"{MARK} done\n".encode()
)
OUTPUT = b"first line\n" + b"x" * 3_000_000 + b"\nno newline at the end"


def feed(sink: LogSink, data: bytes, rng: random.Random) -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 7, 100, 65536, 1 << 20])
        out += sink.feed(data[pos : pos + step])
        pos += step
    return bytes(out + sink.finish())


@pytest.mark.parametrize("seed", range(5))
def test_the_log_sink_keeps_output_and_markers_apart_however_the_stream_is_cut(seed: int) -> None:
    sink = LogSink(MARK, 0, 0)
    assert feed(sink, STREAM, random.Random(seed)) == OUTPUT
    marks = Marks.parse(sink.markers)
    assert (marks.exit, marks.done, marks.texts, marks.texts_done) == (0, True, {"o": ["aGVsbG8K"]}, {"o"})


@pytest.mark.parametrize("archived", [0, 5, 11, 3_000_011, 3_000_012, len(OUTPUT)])
def test_a_re_read_stream_skips_exactly_what_the_archive_holds(archived: int) -> None:
    """Hazard: after a broken stream or a restart the log is read again from its start; the archive must
    end up as the container wrote it, without a gap or a repeated piece."""
    held = OUTPUT[:archived]
    sink = LogSink(MARK, held.count(b"\n"), len(held) - (held.rfind(b"\n") + 1))
    assert held + feed(sink, STREAM, random.Random(archived)) == OUTPUT
    assert Marks.parse(sink.markers).done
