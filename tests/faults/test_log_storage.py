"""Faults of the log storage: a log dir on a tiny tmpfs that fills up, a log file that stalls.

Both must degrade to counted, reported drops on that one sink: the console and the other
units' files get every line, `ctl status` answers within 200 ms throughout, and the sink
recovers when the storage does.
"""

from __future__ import annotations

import os
import shlex
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.common import (
    StatusProbe,
    counter_unit,
    numbers,
    printed,
    reported_lost,
    vastinit_warnings,
)
from tests.harness import Vastinit, wait_until, write_unit

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

Start = Callable[..., Vastinit]


def _console_numbers(v: Vastinit, unit: str) -> list[int]:
    return [int(line[1:7]) for line in v.unit_lines(unit) if line.startswith("L")]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (in its own mount ns)")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_full_log_dir_drops_are_counted_and_the_sink_recovers(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    """The log dir is a 512 KiB tmpfs (in a mount namespace of vastinit's own: the host sees
    nothing), 400 KiB of it taken by a filler file; a unit writes 1,000 lines/s into it."""
    stop = tmp_path / "stop"
    write_unit(units_dir, "writer", counter_unit(stop, rate=1000))
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    filler = log_dir / "filler"
    setup = (
        f"mount -t tmpfs -o size=512k tmpfs {shlex.quote(str(log_dir))} && "
        f'head -c 400k /dev/zero > {shlex.quote(str(filler))} && exec "$@"'
    )
    v = vastinit_run(control=True, wrap=["unshare", "-m", "sh", "-c", setup, "sh"])
    v.wait_control()
    # The tmpfs exists only in vastinit's mount namespace: reach it through /proc/PID/root.
    inside = Path(f"/proc/{v.pid}/root") / log_dir.relative_to("/")
    log_file = inside / "writer.log"
    with StatusProbe(v.socket, tmp_path) as probe:
        v.wait_state("writer", "ready")
        warned = wait_until(
            lambda: vastinit_warnings(v, "writer", "space"),
            20,
            "a warning about writer's log file (no space left on device)",
        )
        assert warned
        full_at = max(numbers(log_file.read_bytes()), default=-1)
        # Lines go on being produced while the disk is full; then the disk recovers.
        wait_until(
            lambda: len(_console_numbers(v, "writer")) > full_at + 1000,
            20,
            "1,000 more lines printed while the disk is full",
        )
        (inside / "filler").unlink()
        mark = len(_console_numbers(v, "writer"))
        wait_until(
            lambda: any(n > mark for n in numbers(log_file.read_bytes())),
            20,
            f"lines after {mark} to reach writer.log once the disk has room again",
        )
        stop.touch()
        v.wait_line("writer", "done", timeout=20)
    probe.assert_responsive()
    total = printed(v, "writer")
    # The console lost nothing: every line, in order.
    assert _console_numbers(v, "writer") == list(range(total))
    data = log_file.read_bytes()
    in_file = numbers(data)
    assert in_file == sorted(set(in_file)), "lines out of order or repeated in writer.log"
    assert in_file[: full_at + 1] == list(range(full_at + 1)), "a gap before the disk filled"
    lost = total - len(in_file)  # 0 is fine too, if vastinit held them until there was room
    print(
        f"full log dir: {lost} of {total} lines not in writer.log; status worst "
        f"{probe.worst_ms():.1f} ms"
    )
    assert reported_lost(v, "writer", file_text=data) == lost, (
        f"{lost} lines missing from writer.log; vastinit must report that count"
    )
    assert v.terminate() == 0


def test_stalled_log_file_does_not_freeze_vastinit(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    """A unit's log file is a FIFO nobody reads: opening or writing it blocks for good, the
    way a hung NFS or FUSE mount does. Another unit logs to an ordinary file meanwhile."""
    stop = tmp_path / "stop"
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    fifo = log_dir / "stuck.log"
    os.mkfifo(fifo)
    write_unit(units_dir, "stuck", counter_unit(stop, rate=1000))
    write_unit(units_dir, "bystander", counter_unit(stop, rate=200))
    v = vastinit_run(control=True)
    received = bytearray()
    reading = threading.Event()
    quit_reader = threading.Event()

    def read_fifo() -> None:
        reading.wait()
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            while not quit_reader.is_set():
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                if not chunk:
                    time.sleep(0.01)  # no writer yet, or between reopenings
                    continue
                received.extend(chunk)
        finally:
            os.close(fd)

    reader = threading.Thread(target=read_fifo, daemon=True)
    reader.start()
    try:
        v.wait_control()  # sampling starts once the socket is there
        with StatusProbe(v.socket, tmp_path) as probe:
            v.wait_state("stuck", "running")
            # Two seconds of stall (a few thousand lines into a file that takes none).
            wait_until(
                lambda: len(_console_numbers(v, "stuck")) >= 2000,
                20,
                "2,000 lines printed by stuck while its log file stalls",
            )
            # The storage comes back: someone reads the FIFO.
            reading.set()
            mark = len(_console_numbers(v, "stuck"))
            wait_until(
                lambda: any(n > mark for n in numbers(bytes(received))),
                20,
                f"lines after {mark} to reach the FIFO once it is read",
            )
            stop.touch()
            v.wait_line("stuck", "done", timeout=20)
            v.wait_line("bystander", "done", timeout=20)
            total = printed(v, "stuck")
            wait_until(
                lambda: total - 1 in numbers(bytes(received)),
                10,
                "the last line to reach the FIFO",
            )
        probe.assert_responsive()
    finally:
        reading.set()
        quit_reader.set()
        reader.join(5)
    assert _console_numbers(v, "stuck") == list(range(total))
    # The other unit's file was not held up by the stalled one: every line.
    by_total = printed(v, "bystander")
    assert numbers((log_dir / "bystander.log").read_bytes()) == list(range(by_total))
    in_fifo = numbers(bytes(received))
    assert in_fifo == sorted(set(in_fifo)), "lines out of order or repeated"
    lost = total - len(in_fifo)  # 0 is fine too, if vastinit held them until the reader came
    print(
        f"stalled log file: {lost} of {total} lines not in the FIFO; status worst "
        f"{probe.worst_ms():.1f} ms"
    )
    assert vastinit_warnings(v, "stuck"), "no warning mentions the stalled log file of stuck"
    assert reported_lost(v, "stuck") == lost, (
        f"{lost} lines never reached stuck.log; vastinit must report that count"
    )
    assert v.terminate() == 0
