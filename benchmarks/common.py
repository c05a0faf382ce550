"""Shared measuring tools: /proc readings, A/B alternation, figures with targets, JSON results.

Every workload measures the *supervisor process only*: its own utime+stime from
``/proc/PID/stat`` (not ``cutime``/``cstime``: the units' CPU is not the supervisor's) and
its ``VmRSS``/``VmHWM`` from ``/proc/PID/status``.  Workloads return one ``Sample`` (metric
name -> number) per run; ``alternate`` runs the tools A B A B after a warm-up, and
``Figure`` turns the samples into a median, a min-max and a vastinit/supervisord ratio.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")

VASTINIT = "vastinit"
SUPERVISORD = "supervisord"

Sample = dict[str, float]
"""One run's measurements: metric name -> value."""

RunOnce = Callable[[str, bool], Sample]
"""``run_once(tool, warmup)``: one run of a workload with one tool."""


# -- /proc -----------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """CPU-seconds (user + system) used so far by process ``pid`` itself, not its children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3 of stat(5), so utime (14) is index 11 here.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def proc_rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` now, in MB (10^6 bytes)."""
    return proc_status_kib(pid, "VmRSS") * 1024 / 1e6


def proc_hwm_mb(pid: int) -> float:
    """Peak resident set size of ``pid`` so far, in MB."""
    return proc_status_kib(pid, "VmHWM") * 1024 / 1e6


def proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state letter) for every process visible in /proc."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        table[int(entry)] = (int(fields[1]), fields[0])
    return table


def descendants(root: int) -> dict[int, str]:
    """pid -> state letter for every process below ``root`` (``root`` excluded)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for pid, (ppid, state) in proc_table().items():
        children.setdefault(ppid, []).append((pid, state))
    out: dict[int, str] = {}
    frontier = [root]
    while frontier:
        for pid, state in children.get(frontier.pop(), ()):
            if pid not in out:
                out[pid] = state
                frontier.append(pid)
    return out


def first_child(pid: int, timeout: float = 10.0) -> int:
    """The first child of ``pid`` (e.g. the supervisor that ``unshare --fork`` started)."""

    def child() -> int | None:
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except FileNotFoundError:
            return None
        return int(text[0]) if text else None

    found: int = wait_until(child, timeout, f"a child of pid {pid}")
    return found


# -- waiting ---------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """A run could not be measured (a supervisor died, a deadline passed)."""


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.005
) -> Any:
    """Poll ``predicate`` until truthy and return its value; BenchError naming ``what`` at the
    deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_quiet(pid: int, quiet: float = 0.3, timeout: float = 30.0) -> float:
    """Wait until ``pid`` has used no CPU for ``quiet`` seconds; return its CPU-seconds then.

    A settle step, not a guess: it waits for a condition (no CPU tick for a while), so a
    baseline is not taken while the supervisor is still busy logging its own start.
    """
    deadline = time.monotonic() + timeout
    last = proc_cpu(pid)
    since = time.monotonic()
    while True:
        time.sleep(0.05)
        now_cpu = proc_cpu(pid)
        now = time.monotonic()
        if now_cpu != last:
            last, since = now_cpu, now
        elif now - since >= quiet:
            return now_cpu
        if now > deadline:
            return now_cpu  # a supervisor with a periodic tick is never fully quiet


# -- statistics and figures ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a figure must reach: ``ratio`` (vastinit/supervisord median) or vastinit's own
    median (``abs``) at most ``value``."""

    kind: str  # "ratio" | "abs"
    value: float
    text: str = ""

    def describe(self) -> str:
        """The target as the table shows it."""
        if self.text:
            return self.text
        return f"ratio <= {self.value:g}" if self.kind == "ratio" else f"<= {self.value:g}"


@dataclass
class Figure:
    """One reported number: samples per tool, summarised as median [min-max] and a ratio."""

    key: str
    label: str
    unit: str
    samples: dict[str, list[float]]
    target: Target | None = None
    note: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    def summarise(self) -> Figure:
        """Fill ``summary`` (medians, min, max, ratio, met) from ``samples``; return self."""
        out: dict[str, Any] = {}
        for tool, values in self.samples.items():
            if values:
                out[tool] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                }
        a, b = out.get(VASTINIT), out.get(SUPERVISORD)
        ratio: float | None = None
        if a is not None and b is not None and b["median"] > 0:
            ratio = a["median"] / b["median"]
        out["ratio"] = ratio
        met: bool | None = None
        if self.target is not None and a is not None:
            if self.target.kind == "ratio" and ratio is not None:
                met = ratio <= self.target.value
            elif self.target.kind == "abs":
                met = a["median"] <= self.target.value
            elif self.target.kind == "ratio" and b is not None and b["median"] == 0:
                met = a["median"] == 0
        out["met"] = met
        self.summary = out
        return self


def figure(
    key: str,
    label: str,
    unit: str,
    runs: dict[str, list[Sample]],
    metric: str,
    *,
    tools: tuple[str, str] = (VASTINIT, SUPERVISORD),
    target: Target | None = None,
    note: str = "",
) -> Figure:
    """A figure from ``metric`` of each run; ``tools`` names the (vastinit, supervisord) runs
    to compare (a workload may run supervisord in more than one configuration)."""
    samples: dict[str, list[float]] = {}
    for side, tool in zip((VASTINIT, SUPERVISORD), tools, strict=True):
        values = [s[metric] for s in runs.get(tool, []) if metric in s]
        if values:
            samples[side] = values
    return Figure(key, label, unit, samples, target, note).summarise()


# -- alternation -----------------------------------------------------------------------------


def alternate(
    tools: Sequence[str],
    runs: int,
    run_once: RunOnce,
    *,
    warmup: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[Sample]]:
    """Run each tool once as a discarded warm-up, then ``runs`` rounds of A B A B ..."""
    out: dict[str, list[Sample]] = {tool: [] for tool in tools}
    if warmup:
        for tool in tools:
            if progress:
                progress(f"warm-up {tool}")
            run_once(tool, True)
    for i in range(runs):
        for tool in tools:
            sample = run_once(tool, False)
            if progress:
                shown = ", ".join(f"{k}={_fmt(v)}" for k, v in sample.items())
                progress(f"run {i + 1}/{runs} {tool}: {shown}")
            out[tool].append(sample)
    return out


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) >= 1:
        return str(int(value))
    return f"{value:.4g}"


# -- output ----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, kernel, Python, supervisor version, load average at the start."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        sd_version = version("supervisor")
    except Exception:
        sd_version = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "supervisor": sd_version,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def figure_rows(figures: Iterable[Figure]) -> list[list[str]]:
    """Table rows: figure, vastinit median [min-max], supervisord median [min-max], ratio,
    target, met."""
    rows = []
    for fig in figures:
        s = fig.summary
        ratio = s.get("ratio")
        met = s.get("met")
        rows.append(
            [
                f"{fig.label} ({fig.unit})" if fig.unit else fig.label,
                _cell(s.get(VASTINIT)),
                _cell(s.get(SUPERVISORD)),
                "-" if ratio is None else f"{ratio:.3g}",
                fig.target.describe() if fig.target else "",
                "" if met is None else ("yes" if met else "**MISSED**"),
            ]
        )
    return rows


def _cell(stat: dict[str, Any] | None) -> str:
    if stat is None:
        return "-"
    med, lo, hi = stat["median"], stat["min"], stat["max"]
    if lo == hi:
        return _num(med)
    return f"{_num(med)} [{_num(lo)}-{_num(hi)}]"


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


HEADER = ["figure", VASTINIT, SUPERVISORD, "ratio", "target", "met"]


def render_text(figures: Sequence[Figure]) -> str:
    """A plain aligned table for the terminal."""
    rows = [HEADER, *figure_rows(figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(figures: Sequence[Figure]) -> str:
    """The same table as Markdown (docs/performance.md)."""
    rows = [HEADER, ["---"] * len(HEADER), *figure_rows(figures)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def save_results(payload: dict[str, Any], directory: Path = RESULTS) -> Path:
    """Write ``payload`` to ``directory/YYYYmmdd-HHMMSS.json`` and ``latest.json``; return the
    first path."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = directory / f"{stamp}.json"
    text = json.dumps(payload, indent=1, default=_json_default)
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path


def _json_default(obj: object) -> Any:
    if isinstance(obj, Figure | Target):
        return asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def log(message: str) -> None:
    """Progress on stderr, so stdout keeps only the tables."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- options and programs --------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What ``python -m benchmarks`` was asked for; every workload reads its size from here."""

    runs: int = 3
    quick: bool = False
    idle_s: float = 30.0
    warmup: bool = True
    keep: bool = False  # keep each run's temp directory (for debugging)


@dataclass
class Report:
    """A workload's outcome: its figures and every run's raw samples."""

    name: str
    figures: list[Figure]
    samples: dict[str, dict[str, list[Sample]]]
    notes: list[str] = field(default_factory=list)


_BUILD: list[Path] = []


def compile_c(source: Path) -> Path:
    """``cc -O2`` ``source`` into a temp dir kept for this process; the binary's path."""
    import atexit
    import shutil
    import subprocess
    import tempfile

    if not _BUILD:
        build = Path(tempfile.mkdtemp(prefix="vastinit-bench-bin-"))
        atexit.register(shutil.rmtree, build, True)
        _BUILD.append(build)
    out = _BUILD[0] / source.stem
    if not out.exists():
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise BenchError(f"no C compiler (cc/gcc) on PATH to build {source}")
        subprocess.run([cc, "-O2", "-o", str(out), str(source)], check=True)
    return out


def workdir(prefix: str) -> Path:
    """A fresh temp directory for one run."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"vastinit-bench-{prefix}-"))


def remove_workdir(path: Path, opts: Options) -> None:
    """Delete a run's directory unless ``--keep`` was given."""
    import shutil

    if opts.keep:
        log(f"kept {path}")
        return
    shutil.rmtree(path, ignore_errors=True)
