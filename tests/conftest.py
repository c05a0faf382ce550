"""Shared fixtures: a real vastinit run in a temp dir, stopped at the end of each test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Vastinit

# Tests never read this machine's /etc/supervisor nor link /var/run/supervisor.sock, even
# on a host that looks like a box (VAST_CONTAINERLABEL set): a test that wants the box
# role sets VASTINIT_ROLE=box with a scratch VASTINIT_SUPERVISOR_DIR itself.
os.environ.setdefault("VASTINIT_ROLE", "workstation")
os.environ.setdefault("VASTINIT_SUPERVISOR_SOCKET", "")


@pytest.fixture
def units_dir(tmp_path: Path) -> Path:
    d = tmp_path / "units"
    d.mkdir()
    return d


@pytest.fixture
def vastinit_run(tmp_path: Path, units_dir: Path) -> Iterator[Callable[..., Vastinit]]:
    """Start ``vastinit run`` on ``units_dir``; every instance is killed at teardown."""
    started: list[Vastinit] = []

    def start(**kwargs: Any) -> Vastinit:
        v = Vastinit(units_dir, tmp_path, **kwargs)
        started.append(v)
        return v

    yield start
    for v in started:
        v.kill()
