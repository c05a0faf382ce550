"""The event stream (GET /v1/events) on a real vastinit: every state change of a restarting
unit in order, nothing missed across a reconnect, and a client that never reads its log
subscription dropped with memory bounded and everything else unaffected."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.harness import PROGRAMS, Vastinit, wait_until, write_unit
from vastinit.control.client import Client, CtlError, _chunks, _read_head


class Follower:
    """A client of /v1/events reading in a thread; ``events`` grows as they arrive."""

    def __init__(self, path: Path, query: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.sendall(f"GET /v1/events?{query} HTTP/1.1\r\nHost: vastinit\r\n\r\n".encode())
        self.reader = self.sock.makefile("rb")
        status, _headers = _read_head(self.reader)
        assert status == 200, status
        self.events: list[dict[str, Any]] = []
        self.ended = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        pending = b""
        try:
            for data in _chunks(self.reader):
                pending += data
                *lines, pending = pending.split(b"\n")
                self.events.extend(json.loads(line) for line in lines if line)
        except (CtlError, OSError, ValueError):
            pass
        self.ended = True

    def states(self) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["type"] == "state"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
        self.reader.close()
        self.sock.close()


def _check_chain(states: list[dict[str, Any]]) -> None:
    """Consecutive seq numbers, and each move starts where the one before ended."""
    for before, after in itertools.pairwise(states):
        assert after["seq"] == before["seq"] + 1, (before, after)
        assert after["old"] == before["new"], (before, after)


def test_state_events_of_a_restarting_unit_arrive_in_order_and_survive_a_reconnect(
    tmp_path: Path,
) -> None:
    units = tmp_path / "units"
    write_unit(
        units,
        "flappy",
        """
        command = ["sh", "-c", "sleep 0.2; exit 3"]
        [restart]
        delay = "100ms"
        limit = 1000
        window = "1m"
        """,
    )
    vi = Vastinit(units, tmp_path, control=True)
    whole: Follower | None = None
    first: Follower | None = None
    again: Follower | None = None
    try:
        vi.wait_control()
        # One client follows from the first event to the end; another leaves and comes back.
        whole = Follower(vi.socket, "since=0&type=state&unit=flappy")
        first = Follower(vi.socket, "since=0&type=state")

        def backoffs(f: Follower) -> int:
            return sum(e["new"] == "backoff" for e in f.states())

        wait_until(lambda: backoffs(first) >= 3, 20, "three restarts")
        first.close()
        seen = first.states()
        last_seq = seen[-1]["seq"]
        assert seen[0]["seq"] == 1 and seen[0]["old"] == "inactive"
        # More transitions happen while it is away.
        wait_until(lambda: any(e["seq"] > last_seq + 8 for e in whole.states()), 20, "more moves")
        again = Follower(vi.socket, f"since={last_seq}&type=state")
        wait_until(lambda: len(again.states()) >= 10, 20, "the missed moves and new ones")
        missed_and_new = again.states()
        assert all(e["type"] != "reset" for e in again.events)
        combined = seen + missed_and_new
        _check_chain(combined)
        # The same events, byte for byte in content, as the client that never left saw.
        reference = {e["seq"]: e for e in whole.states()}
        assert all(reference[e["seq"]] == e for e in combined if e["seq"] in reference)
        _check_chain(whole.states())
        exits = [e for e in combined if e["new"] == "backoff"]
        assert exits and all(e["exit"]["code"] == 3 for e in exits)
        # Only a move out of a live process carries an exit.
        assert all("exit" not in e for e in combined if e["old"] not in ("running", "ready"))
        assert all(e["pid"] for e in combined if e["new"] == "running")
        ready = [e for e in combined if e["new"] == "ready"]
        assert ready and all(0 <= e["ready_after_s"] < 5 for e in ready)
        info = Client(str(vi.socket)).get("/v1/version")["events"]
        assert info["dropped"] == 0 and info["last_seq"] >= combined[-1]["seq"]
    finally:
        for f in (whole, first, again):
            if f is not None:
                f.close()
        vi.terminate()


FLOOD = PROGRAMS / "paced_flood.py"  # RATE lines/s of 100 bytes


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _cut_off(sock: socket.socket) -> bool:
    """True once the server closed the connection; reads nothing."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)
    return any(ev & (select.POLLHUP | select.POLLRDHUP) for _, ev in poller.poll(0))


def test_a_client_that_never_reads_its_log_subscription_is_dropped(tmp_path: Path) -> None:
    units = tmp_path / "units"
    write_unit(units, "flood", f'command = ["{sys.executable}", "{FLOOD}", "10000"]\n')
    write_unit(units, "steady", 'command = ["sleep", "600"]\n')
    vi = Vastinit(units, tmp_path, control=True)
    stalled: socket.socket | None = None
    watcher: Follower | None = None
    try:
        vi.wait_control()
        vi.wait_state("flood", "running")
        vi.wait_state("steady", "ready")
        client = Client(str(vi.socket))
        steady_pid = client.get("/v1/status?unit=steady")["units"][0]["pid"]
        wait_until(lambda: len(vi.unit_lines("flood")) > 5000, 20, "the flood to be under way")
        base = _rss_mb(vi.pid)
        watcher = Follower(vi.socket, "type=state")  # reads everything: never dropped
        stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(str(vi.socket))
        stalled.sendall(b"GET /v1/events?type=state&logs=flood HTTP/1.1\r\nHost: vastinit\r\n\r\n")
        start = time.monotonic()
        peak, worst_status = base, 0.0
        while time.monotonic() - start < 30:
            t0 = time.monotonic()
            info = client.get("/v1/version")["events"]
            client.get("/v1/status")
            worst_status = max(worst_status, time.monotonic() - t0)
            peak = max(peak, _rss_mb(vi.pid))
            if info["dropped"] >= 1 and _cut_off(stalled):
                break
            time.sleep(0.2)
        took = time.monotonic() - start
        print(
            f"\nstalled event client: dropped after {took:.1f} s; RSS {base:.1f} MB before, "
            f"peak {peak:.1f} MB; worst status+version {worst_status:.2f} s"
        )
        info = client.get("/v1/version")["events"]
        assert info["dropped"] == 1, info
        assert _cut_off(stalled), "the stalled client's connection was never closed"
        assert took < 10
        assert peak - base < 30
        assert worst_status < 1.0
        assert any(e.get("event") == "event subscriber dropped" for e in vi.events)
        # Everything else went on: the other client is still there, the units untouched.
        assert not watcher.ended
        status = {u["name"]: u for u in client.get("/v1/status")["units"]}
        assert status["steady"]["pid"] == steady_pid and status["steady"]["state"] == "ready"
        assert status["flood"]["state"] == "ready" and status["flood"]["restarts"] == 0
        lines_before = len(vi.unit_lines("flood"))
        wait_until(
            lambda: len(vi.unit_lines("flood")) > lines_before + 1000, 10, "the flood to go on"
        )
    finally:
        if stalled is not None:
            stalled.close()
        if watcher is not None:
            watcher.close()
        vi.terminate()
    assert os.path.exists(vi.log_dir / "flood.log")


class _Lines:
    """A text stream read in a thread; ``lines`` grows as they arrive."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))


def test_ctl_status_watch_prints_each_change_and_resumes_across_a_vastinit_restart(
    tmp_path: Path,
) -> None:
    units = tmp_path / "units"
    write_unit(units, "web", 'command = ["sleep", "600"]\n')
    vi = Vastinit(units, tmp_path, control=True)
    watch = None
    try:
        vi.wait_control()
        vi.wait_state("web", "ready")
        watch = vi.ctl_popen("status", "--watch")
        out, err = _Lines(watch.stdout), _Lines(watch.stderr)
        wait_until(lambda: out.count("NAME") == 1, 10, "the status table")
        assert vi.ctl("restart", "web").returncode == 0
        wait_until(lambda: out.count("web stopping -> stopped") == 1, 10, "the stop")
        wait_until(lambda: out.count("web running -> ready") == 1, 10, "ready again")
        # vastinit goes away and comes back: the watch reconnects and, as its seq numbers
        # belong to the old run, prints the table afresh.
        vi.terminate()
        wait_until(lambda: err.count("reconnecting") == 1, 10, "the watch to notice")
        vi = Vastinit(units, tmp_path, control=True)
        vi.wait_control()
        wait_until(lambda: out.count("NAME") == 2, 15, "the table again")
        assert out.count("events were missed") == 1
        assert vi.ctl("restart", "web").returncode == 0
        wait_until(lambda: out.count("web running -> ready") >= 2, 10, "the new run's moves")
        assert watch.poll() is None
        watch.send_signal(signal.SIGINT)
        assert watch.wait(10) == 0
    finally:
        if watch is not None and watch.poll() is None:
            watch.kill()
            watch.wait(5)
        vi.terminate()


def test_reload_restart_to_apply_and_cron_runs_are_events(tmp_path: Path) -> None:
    units = tmp_path / "units"
    env_file = tmp_path / "app.env"
    env_file.write_text("GREETING=hello\n")
    write_unit(units, "envd", f'command = ["sleep", "600"]\nenv_files = ["{env_file}"]\n')
    write_unit(
        units,
        "tick",
        """
        type = "cron"
        command = "echo tick; exit 4"
        [schedule]
        cron = "0 0 1 1 *"
        """,
    )
    vi = Vastinit(units, tmp_path, control=True)
    follower: Follower | None = None
    try:
        vi.wait_control()
        vi.wait_state("envd", "ready")
        vi.wait_state("tick", "scheduled")
        client = Client(str(vi.socket))
        # Bad requests are refused before the stream starts, with the usual JSON error.
        for path, code in [
            ("/v1/events?type=bogus", "bad_request"),
            ("/v1/events?since=soon", "bad_request"),
            ("/v1/events?unit=evnd", "unknown_unit"),
            ("/v1/events?logs=nope", "unknown_unit"),
        ]:
            try:
                next(iter(client.stream(path)))
            except CtlError as exc:
                assert exc.code == code, (path, exc)
            else:
                raise AssertionError(f"{path} was not refused")
        follower = Follower(vi.socket, "type=reload&type=restart_to_apply&type=cron")
        env_file.write_text("GREETING=bonjour\n")
        write_unit(units, "added", 'command = ["sleep", "600"]\n')
        assert vi.ctl("reload").returncode == 0
        assert vi.ctl("start", "tick").returncode == 0  # an armed schedule: a run now

        def types() -> list[str]:
            return [e["type"] for e in follower.events]

        wait_until(lambda: types().count("cron") == 2, 15, "the cron run's two events")
        by_type = {e["type"]: e for e in follower.events if e["type"] != "cron"}
        note = f"GREETING changed in {env_file}"
        assert by_type["restart_to_apply"]["unit"] == "envd"
        assert by_type["restart_to_apply"]["note"] == note
        reload = by_type["reload"]
        assert reload["added"] == ["added"] and reload["changed"] == []
        assert reload["restart_to_apply"] == {"envd": note}
        assert "bonjour" not in json.dumps(follower.events)  # names and files, never values
        started, ended = [e for e in follower.events if e["type"] == "cron"]
        assert started["phase"] == "started" and ended["phase"] == "ended"
        assert started["unit"] == ended["unit"] == "tick" and started["run"] == ended["run"]
        assert ended["exit"]["code"] == 4 and ended["duration_s"] >= 0
        assert started["seq"] < ended["seq"]
        # Restarting envd takes the new values: the note is cleared, as an event too.
        assert vi.ctl("restart", "envd").returncode == 0
        wait_until(
            lambda: any(
                e["type"] == "restart_to_apply" and e["note"] is None for e in follower.events
            ),
            10,
            "the note to be cleared",
        )
    finally:
        if follower is not None:
            follower.close()
        vi.terminate()


def test_transient_units_added_and_removed_are_events(tmp_path: Path) -> None:
    units = tmp_path / "units"
    write_unit(units, "steady", 'command = ["sleep", "600"]\n')
    vi = Vastinit(units, tmp_path, control=True)
    try:
        vi.wait_control()
        # No unit filter: `job` does not exist yet (a filter on an unknown unit is a 404).
        follower = Follower(vi.socket, "type=unit&type=state")
        try:
            spec = tmp_path / "job.toml"
            spec.write_text('command = ["sleep", "600"]\n')
            assert vi.ctl("add", "job", str(spec)).returncode == 0
            wait_until(
                lambda: any(e.get("new") == "ready" for e in follower.states()), 10, "job ready"
            )
            assert vi.ctl("remove", "job").returncode == 0
            wait_until(
                lambda: any(e.get("action") == "removed" for e in list(follower.events)),
                10,
                "the removed event",
            )
            job = [e for e in follower.events if e.get("unit") == "job"]
            kinds = [(e["type"], e.get("action") or e.get("new")) for e in job]
            assert kinds[0] == ("unit", "added") and kinds[-1] == ("unit", "removed"), kinds
            assert ("state", "stopped") in kinds
        finally:
            follower.close()
        assert vi.terminate() == 0
    finally:
        vi.kill()


def test_a_log_client_that_pauses_keeps_its_stream_and_is_told_exactly_what_it_missed(
    tmp_path: Path,
) -> None:
    """A client of ``logs=flood`` that reads nothing for 3 s of a 10,000 lines/s flood is not
    dropped (before: dropped at 1 MiB, i.e. after ~1 s): the lines it could not take are shed,
    one ``skipped`` event counts them exactly (the numbered lines jump by that much), and
    every line after the gap comes, in order."""
    units = tmp_path / "units"
    write_unit(units, "flood", f'command = ["{sys.executable}", "{FLOOD}", "10000"]\n')
    vi = Vastinit(units, tmp_path, control=True)
    sock: socket.socket | None = None
    try:
        vi.wait_control()
        vi.wait_state("flood", "running")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(str(vi.socket))
        sock.sendall(b"GET /v1/events?logs=flood HTTP/1.1\r\nHost: vastinit\r\n\r\n")
        start = time.monotonic()
        wait_until(lambda: time.monotonic() - start > 3, 5, "3 s without reading")
        reader = sock.makefile("rb")
        status, _headers = _read_head(reader)
        assert status == 200
        events: list[dict[str, Any]] = []
        pending = b""
        chunks = _chunks(reader)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pending += next(chunks)
            *lines, pending = pending.split(b"\n")
            events.extend(json.loads(line) for line in lines if line)
            after_gap = [e for e in events if e["type"] == "skipped"]
            if (
                after_gap
                and sum(e["type"] == "log" for e in events[events.index(after_gap[0]) :]) > 20_000
            ):
                break
        kinds = {e["type"] for e in events}
        assert "dropped" not in kinds, [e for e in events if e["type"] == "dropped"]
        numbers: list[int | str] = [
            int(e["text"].split()[0]) if e["type"] == "log" else "gap"
            for e in events
            if e["type"] in ("log", "skipped")
        ]
        skipped = [e["lines"] for e in events if e["type"] == "skipped"]
        assert skipped, "no line was shed: the pause was too short to test anything"
        # Between two consecutive lines the numbers step by 1, or by 1 + the skipped count.
        gaps = iter(skipped)
        prev: int | None = None
        jump = 0
        for item in numbers:
            if item == "gap":
                jump += next(gaps)
                continue
            assert isinstance(item, int)
            if prev is not None:
                assert item == prev + 1 + jump, (prev, item, jump)
            prev, jump = item, 0
        assert Client(str(vi.socket)).get("/v1/version")["events"]["dropped"] == 0
    finally:
        if sock is not None:
            sock.close()
        vi.terminate()


def test_ctl_logs_follow_reads_the_event_stream_and_gets_every_line(tmp_path: Path) -> None:
    """``ctl logs -f`` is a client of /v1/events: with two units it prints every line of the
    3,000 lines/s flood, consecutive, beside the other unit's lines, prefixed by unit."""
    units = tmp_path / "units"
    write_unit(units, "flood", f'command = ["{sys.executable}", "{FLOOD}", "3000"]\n')
    write_unit(units, "talker", 'command = ["sh", "-c", "echo hello; exec sleep 600"]\n')
    vi = Vastinit(units, tmp_path, control=True)
    proc = None
    try:
        vi.wait_control()
        vi.wait_state("flood", "running")
        proc = vi.ctl_popen("logs", "-f", "-n", "0", "flood", "talker")
        assert proc.stdout is not None
        hub = Client(str(vi.socket))
        wait_until(
            lambda: hub.get("/v1/version")["events"]["subscribers"] == 1, 10, "ctl to subscribe"
        )
        numbers: list[int] = []
        for line in proc.stdout:
            unit, _, text = line.partition(" | ")
            assert unit.strip() in ("flood", "talker"), line  # no vastinit marker: nothing skipped
            if unit.strip() == "flood":
                numbers.append(int(text.split()[0]))
            if len(numbers) >= 6000:
                break
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(5)
        vi.terminate()
