"""Fans every unit's output out to the console, the unit's log file and its in-memory ring."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import structlog

from vastinit.logs.console import ConsoleSink
from vastinit.logs.filesink import CLOSE_TIMEOUT, FileSink
from vastinit.logs.flow import FlowGate
from vastinit.logs.line import Chunk, LogLine
from vastinit.logs.pump import Pump
from vastinit.logs.ring import FollowBudget, LogRing, LogSubscription, merge_tail

_log = structlog.get_logger("vastinit.logs")

LineWatcher = Callable[[list[bytes]], None]


class UnitLog:
    """One unit's output: its pumps (pipes being read), file sink, ring and line watchers."""

    def __init__(self, mux: LogMux, name: str) -> None:
        self.name = name
        self._mux = mux
        self._ring = LogRing(mux.ring_bytes)
        self._file: FileSink | None = None
        self._file_config: tuple[Path, int, int] | None = None
        # stderr's own file (LogSpec.stderr_file); None: stderr goes with stdout
        self._err: FileSink | None = None
        self._err_config: tuple[Path, int, int] | None = None
        self._err_apart = False  # stderr kept out of the main file (own file or none)
        self._pumps: set[Pump] = set()
        self._watchers: list[LineWatcher] = []

    @property
    def file(self) -> FileSink | None:
        """The file sink (for its ``errors`` / ``lost_lines`` counters), None if no file."""
        return self._file

    @property
    def pumps(self) -> frozenset[Pump]:
        """The pipes being read now."""
        return frozenset(self._pumps)

    def configure(self, path: Path | None, max_size: int, keep: int) -> None:
        """Point the file sink at ``path`` (None: no file); a no-op when nothing changed."""
        config = None if path is None else (path, max_size, keep)
        if config == self._file_config:
            return
        self._file_config = config
        self._file = self._repoint(self._file, path, max_size, keep)

    def configure_stderr(self, apart: bool, path: Path | None, max_size: int, keep: int) -> None:
        """Keep stderr out of the main file (``apart``), in ``path`` (None: in no file)."""
        self._err_apart = apart
        config = None if path is None or not apart else (path, max_size, keep)
        if config == self._err_config:
            return
        self._err_config = config
        self._err = self._repoint(self._err, None if config is None else path, max_size, keep)

    def _repoint(
        self, sink: FileSink | None, path: Path | None, max_size: int, keep: int
    ) -> FileSink | None:
        if sink is not None and path == sink.path:
            # Same file, new limits: the writer thread reads them at its next rotation check.
            sink.max_size, sink.keep = max(1, max_size), max(0, keep)
            return sink
        if sink is not None:
            # Its writer finishes what is queued, then closes; shutdown waits for it.
            sink.close_nowait()
            retired = self._mux._retired
            retired.difference_update([s for s in retired if s.idle])
            retired.add(sink)
        return (
            None
            if path is None
            else FileSink(path, max_size, keep, unit=self.name, group=self._mux.file_group)
        )

    @property
    def stderr_file(self) -> FileSink | None:
        """stderr's own file sink, None when stderr goes with stdout (or in no file)."""
        return self._err

    def attach(self, fd: int, stream: str) -> Pump:
        """Start reading ``fd`` (a pipe's read end, now owned and closed at EOF) as ``stream``."""
        # The console's gate: while stdout is busy, the unit's pipe holds the backlog.
        gate = self._mux.console.gate
        file_gate = self._err_gate if stream == "stderr" else self._gate
        pump = Pump(
            fd, stream, self._deliver, on_eof=self._pumps.discard, gate=gate, file_gate=file_gate
        )
        self._pumps.add(pump)
        return pump

    def _gate(self) -> FlowGate | None:
        return self._file.gate if self._file is not None else None

    def _err_gate(self) -> FlowGate | None:
        if self._err_apart:
            return self._err.gate if self._err is not None else None
        return self._gate()

    def add_watcher(self, fn: LineWatcher) -> Callable[[], None]:
        """Call ``fn`` with each batch of complete lines; returns the function that unsubscribes."""
        self._watchers.append(fn)

        def remove() -> None:
            if fn in self._watchers:
                self._watchers.remove(fn)

        return remove

    def tail(self, n: int) -> list[LogLine]:
        """This unit's last ``n`` lines, oldest first."""
        return merge_tail(self._ring.last(n), n)

    def close(self) -> None:
        """Stop every pump (delivering what they hold); the file closes once it has it all."""
        for pump in list(self._pumps):
            pump.close()
        if self._file is not None:
            self._file.close_nowait()
        if self._err is not None:
            self._err.close_nowait()

    def _deliver(self, stream: str, block: bytes) -> None:
        """The hot path: one framed block to every sink, with per-chunk (not per-line) work."""
        mux = self._mux
        ts = time.time()
        # The file first: it is the sink that must get every line.
        if stream == "stderr" and self._err_apart:
            if self._err is not None:
                self._err.write(block)
        elif self._file is not None:
            self._file.write(block)
        chunk = Chunk(next(mux._seq), ts, self.name, stream, block)
        self._ring.append(chunk)
        mux.console.write_lines(self.name, stream, block, ts)
        if mux._subs:
            mux._publish(chunk)
        if self._watchers:
            lines = block[:-1].split(b"\n")
            for fn in tuple(self._watchers):
                try:
                    fn(lines)
                except Exception:
                    _log.exception("log watcher failed", unit=self.name)


class LogMux:
    """Every unit's logs: get-or-create a ``UnitLog`` per unit, read tails, follow live lines."""

    def __init__(
        self,
        console: ConsoleSink,
        log_dir: Path | None,
        *,
        ring_bytes: int = 1 << 20,
        follower_bytes: int = 1 << 20,
        followers_bytes: int = 64 << 20,
        file_group: int | None = None,
    ) -> None:
        self.console = console
        self.log_dir = log_dir
        self.file_group = file_group
        self._retired: set[FileSink] = set()  # file sinks replaced by a reload, still closing
        self.ring_bytes = ring_bytes
        self.follower_bytes = follower_bytes
        self._units: dict[str, UnitLog] = {}
        self._subs: list[LogSubscription] = []
        self.follow_budget = FollowBudget(followers_bytes)  # all followers' queues together
        self._seq = itertools.count()

    def units(self) -> list[str]:
        """Names of the units that have a log, in creation order."""
        return list(self._units)

    def unit_log(
        self,
        unit: str,
        file: str | None,
        max_size: int,
        keep: int,
        stderr_file: str | None = None,
    ) -> UnitLog:
        """Get or create ``unit``'s log; (re)point its file at ``log_dir/file`` (None: no file)
        and stderr's at ``log_dir/stderr_file`` (None: with stdout; "": in no file)."""
        log = self._units.get(unit)
        if log is None:
            log = self._units[unit] = UnitLog(self, unit)
            self.console.register(unit)
        path = None if file is None or self.log_dir is None else self.log_dir / file
        log.configure(path, max_size, keep)
        err = None if not stderr_file or self.log_dir is None else self.log_dir / stderr_file
        log.configure_stderr(stderr_file is not None, err, max_size, keep)
        return log

    def tail(self, units: Sequence[str] | None, n: int) -> list[LogLine]:
        """The last ``n`` lines of ``units`` (all if None) merged in the order they were read."""
        names = self._units if units is None else units
        chunks: list[Chunk] = []
        for name in names:
            log = self._units.get(name)
            if log is not None:
                chunks.extend(log._ring.last(n))
        return merge_tail(chunks, n)

    def subscribe(
        self, units: Sequence[str] | None, *, backlog: int = 0, max_bytes: int | None = None
    ) -> LogSubscription:
        """Follow ``units`` (all if None), starting with their last ``backlog`` lines, holding
        at most ``max_bytes`` unread (``follower_bytes`` by default).

        Taking the backlog and subscribing happen in one step: no line is missed or repeated.
        """
        sub = LogSubscription(
            None if units is None else frozenset(units),
            max_bytes=self.follower_bytes if max_bytes is None else max_bytes,
            backlog=self.tail(units, backlog) if backlog > 0 else None,
            on_close=self._unsubscribe,
            budget=self.follow_budget,
        )
        self._subs.append(sub)
        return sub

    def files(self) -> dict[str, FileSink]:
        """Each unit's file sink (for its counters: ``errors``, ``lost_lines``...)."""
        return {name: log.file for name, log in self._units.items() if log.file is not None}

    async def aclose(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop every pump (flushing partial lines), end every follower, and close the files,
        waiting up to ``timeout`` in all for them to take what is queued (the rest is counted
        as lost)."""
        for log in self._units.values():
            log.close()
        for sub in list(self._subs):
            sub.close()
        errs = [log.stderr_file for log in self._units.values() if log.stderr_file is not None]
        sinks = [*self.files().values(), *errs, *self._retired]
        self._retired.clear()
        if sinks:
            deadline = time.monotonic() + timeout
            async with anyio.create_task_group() as tg:
                for sink in sinks:
                    tg.start_soon(sink.aclose, max(0.0, deadline - time.monotonic()))

    def _publish(self, chunk: Chunk) -> None:
        for sub in self._subs:
            if sub.wants(chunk.unit):
                sub.push(chunk)
        budget = self.follow_budget
        while budget.queued > budget.limit:
            # Over the shared bound: the follower furthest behind loses its oldest lines.
            if not max(self._subs, key=lambda s: s.queued_bytes).drop_oldest():
                break

    def _unsubscribe(self, sub: LogSubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
