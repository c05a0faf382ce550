"""Shared fixtures: a real vastinit run in a temp dir, stopped at the end of each test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Vastinit

# Tests never touch this machine's /etc, crontabs or /etc/supervisor: every vastinit (and
# `vastinit caddyfile`) they start is in the workstation role (SPEC §4.3), set here before
# any fixture of any scope runs. A test of the box role sets VASTINIT_ROLE=box itself, with
# scratch paths for everything the box role touches.
os.environ["VASTINIT_ROLE"] = "workstation"


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


@pytest.fixture(autouse=True)
def _scratch_portal_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A box-role test that forgets VASTINIT_PORTAL_YAML still never writes /etc."""
    monkeypatch.setenv("VASTINIT_PORTAL_YAML", str(tmp_path / "etc-portal.yaml"))
