"""A real ``vastinit run`` under a log flood with its stdout stalled: files get every line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import REPO, wait_until, write_unit
from tests.integration.test_log_flood import flood_bin, flood_line  # noqa: F401 (fixture)

UNITS = 4
LINES = 250_000  # 4 x 250k = 1,000,000 lines in total


def test_million_lines_reach_files_in_order_while_stdout_is_stalled(
    flood_bin: str,  # noqa: F811
    units_dir: Path,
    tmp_path: Path,
) -> None:
    for i in range(UNITS):
        # Half the units write one line per write(2) (the reader's worst case), half in blocks.
        mode = ', "--line-per-write"' if i % 2 == 0 else ""
        write_unit(
            units_dir,
            f"flood{i}",
            f"""
            type = "oneshot"
            command = ["{flood_bin}", "{LINES}"{mode}]
            [log]
            max_size = "1GiB"
        """,
        )
    log_dir = tmp_path / "logs"
    # vastinit's stdout is a pipe nobody reads until the end: it fills after 64 KiB.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vastinit",
            "run",
            "--units",
            str(units_dir),
            "--log-dir",
            str(log_dir),
            "--no-control",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        started = time.monotonic()
        files = [log_dir / f"flood{i}.log" for i in range(UNITS)]
        wait_until(
            lambda: all(f.exists() and f.stat().st_size >= LINES * 100 for f in files),
            120,
            "every flood line in the files",
            interval=0.05,
        )
        elapsed = time.monotonic() - started
        for f in files:
            data = f.read_bytes()
            assert len(data) == LINES * 100, f"{f.name}: {len(data)} bytes"
            # Spot-check the sequence exactly at both ends and a stride through the middle;
            # any lost, duplicated or reordered line shifts every later offset.
            for n in (0, 1, LINES // 3, LINES // 2, LINES - 2, LINES - 1):
                assert data[n * 100 : (n + 1) * 100] == flood_line(n), f"{f.name} line {n}"
            assert data == b"".join(flood_line(n) for n in range(LINES)), f.name
        # The writers were not held back by the stalled stdout (generous: pathology only).
        assert elapsed < 60, f"flood took {elapsed:.1f}s with stdout stalled"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    # Whatever reached stdout is whole lines only: prefixed lines are never spliced.
    for line in out.split(b"\n"):
        if line.startswith(b"flood"):
            assert len(line.split(b"| ", 1)[1]) == 99, line[:120]
