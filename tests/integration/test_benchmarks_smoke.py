"""``python -m benchmarks`` end to end on its cheapest workload: both tools run, JSON comes out."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("supervisor") is None,
        reason="supervisor (the bench extra: pip install -e '.[bench]') is not installed",
    ),
    pytest.mark.skipif(
        shutil.which("cc") is None and shutil.which("gcc") is None,
        reason="no C compiler to build benchmarks/programs/stamp.c",
    ),
]


def test_quick_restart_benchmark_saves_both_tools_results_as_json(tmp_path: Path) -> None:
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--only", "restart", "--no-warmup"]
    done = subprocess.run(
        [*cmd, "--results", str(results)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "restart gap" in done.stdout, done.stdout

    saved = json.loads((results / "latest.json").read_text())
    assert saved["machine"]["nproc"] >= 1
    assert saved["failed"] == []
    figures = {f["key"]: f for f in saved["workloads"]["restart"]["figures"]}
    gap = figures["restart.gap_ms"]
    assert set(gap["samples"]) == {"vastinit", "supervisord"}
    assert all(len(v) == 1 for v in gap["samples"].values())
    summary = gap["summary"]
    assert summary["ratio"] == pytest.approx(
        summary["vastinit"]["median"] / summary["supervisord"]["median"]
    )
    # supervisord restarts on its main loop's 1 s tick; vastinit with delay = "0s" must not.
    assert summary["supervisord"]["median"] > 500
    assert summary["vastinit"]["median"] < 100
