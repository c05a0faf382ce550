"""Shared fixtures: a real vastinit run in a temp dir, stopped at the end of each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Vastinit


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
