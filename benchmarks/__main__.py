"""``python -m benchmarks``: vastinit and supervisord side by side, same machine, same run.

Each workload runs both tools alternately (a warm-up of each, then A B A B ... for
``--runs`` rounds), prints medians, min-max and the vastinit/supervisord ratio per figure,
and everything (machine, options, raw samples, summaries) is saved as JSON in
``benchmarks/results/`` (``latest.json`` and a timestamped copy).

The ``ctl`` workload lives in ``benchmarks/ctl_latency.py`` (owned separately).  It is run
when that module exposes ``run``; the call passes the keyword arguments its signature
accepts among ``opts`` (an ``Options``), ``runs`` and ``quick``, and expects either a
``benchmarks.common.Report`` or a list of ``benchmarks.common.Figure``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    Figure,
    Options,
    Report,
    log,
    machine_info,
    render_markdown,
    render_text,
    save_results,
)

WORKLOADS = ("flood", "start", "ctl", "restart", "shutdown", "orphans", "cron")
_MODULES = {
    "flood": "benchmarks.flood",
    "start": "benchmarks.start",
    "ctl": "benchmarks.ctl_latency",
    "restart": "benchmarks.restart",
    "shutdown": "benchmarks.shutdown",
    "orphans": "benchmarks.orphans",
    "cron": "benchmarks.cron_idle",  # vastinit only: crontab lines' idle cost
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark vastinit against supervisord (A B A B, medians and ratios).",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=WORKLOADS,
        metavar="WORKLOAD",
        help=f"run only this workload (repeatable): {', '.join(WORKLOADS)}",
    )
    p.add_argument("--runs", type=int, help="measured runs per tool (default 3; --quick: 1)")
    p.add_argument(
        "--idle", type=float, help="idle window for idle CPU, seconds (default 30; --quick: 2)"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 run, short idle")
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up runs")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    p.add_argument("--keep", action="store_true", help="keep each run's temp directory")
    p.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        metavar="DIR",
        help="where the JSON results go (default: benchmarks/results)",
    )
    return p


def _load(name: str) -> Callable[[Options], Report] | None:
    """The workload's ``run`` adapted to ``run(opts) -> Report``; None if not there (yet)."""
    try:
        module = importlib.import_module(_MODULES[name])
    except ModuleNotFoundError as exc:
        if exc.name == _MODULES[name]:
            return None
        raise
    fn = getattr(module, "run", None)
    if fn is None:
        return None
    if name != "ctl":
        return fn  # type: ignore[no-any-return]
    return lambda opts: _call_foreign(name, fn, opts)


def _call_foreign(name: str, fn: Callable[..., Any], opts: Options) -> Report:
    """Call a separately owned workload with the arguments its signature accepts."""
    offered: dict[str, Any] = {"opts": opts, "runs": opts.runs, "quick": opts.quick}
    params = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in offered.items() if k in params}
    result = fn(**kwargs)
    if isinstance(result, Report):
        return result
    figures = [f for f in result if isinstance(f, Figure)]
    return Report(name, figures, {})


def main(argv: list[str] | None = None) -> int:
    """Run the selected workloads; 0 on success, 1 if a workload failed to run."""
    args = _parser().parse_args(argv)
    try:
        import supervisor  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        print(
            "benchmarks: supervisor is not installed (pip install -e '.[bench]')", file=sys.stderr
        )
        return 2
    opts = Options(
        runs=args.runs if args.runs is not None else (1 if args.quick else 3),
        quick=args.quick,
        idle_s=args.idle if args.idle is not None else (2.0 if args.quick else 30.0),
        warmup=not args.no_warmup,
        keep=args.keep,
    )
    selected = args.only or list(WORKLOADS)
    machine = machine_info()
    log(f"machine: {machine}")
    started = time.time()
    reports: list[Report] = []
    failed: list[str] = []
    for name in WORKLOADS:
        if name not in selected:
            continue
        run = _load(name)
        if run is None:
            log(f"{name}: no workload module with run() yet, skipped")
            continue
        t0 = time.monotonic()
        try:
            report = run(opts)
        except Exception as exc:
            log(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            failed.append(name)
            continue
        log(f"{name}: done in {time.monotonic() - t0:.0f}s")
        reports.append(report)
        print(f"\n## {name}\n{render_text(report.figures)}", flush=True)
    figures = [f for r in reports for f in r.figures]
    payload = {
        "machine": machine,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
        "options": dataclasses.asdict(opts),
        "failed": failed,
        "workloads": {
            r.name: {"figures": r.figures, "samples": r.samples, "notes": r.notes} for r in reports
        },
    }
    path = save_results(payload, args.results)
    log(f"results saved to {path}")
    if args.markdown:
        print("\n" + render_markdown(figures))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
