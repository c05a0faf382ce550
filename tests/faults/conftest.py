"""Fixtures of the fault suite: vastinit started with a stdout of the test's choosing."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.common import vastinit_argv, vastinit_env
from tests.harness import REPO


@pytest.fixture
def raw_vastinit(
    tmp_path: Path, units_dir: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``raw_vastinit(stdout=FD)``: ``vastinit run`` (control socket on, JSON logs) whose stdout
    is what the test gives it, stderr in tmp_path/stderr; killed at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(stdout: Any, **env: str) -> subprocess.Popen[bytes]:
        with (tmp_path / "stderr").open("ab") as err:
            proc = subprocess.Popen(
                vastinit_argv(units_dir, tmp_path),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=err,
                env=vastinit_env(**env),
                cwd=REPO,
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
