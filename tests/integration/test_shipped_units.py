"""The units shipped in units/: they pass ``vastinit check``, say what the stack needs
(dependencies, probes, stop rules), and a ``vastinit run`` on a machine that lacks the
programs or the settings skips those units with the reason instead of restarting them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, Vastinit, wait_until, write_unit
from vastinit.config import load_units
from vastinit.model import (
    DependencyCondition,
    ProbeKind,
    StopMode,
    Unit,
    UnitType,
)

UNITS = REPO / "vastinit" / "units"
SHIPPED = ("caddy", "jupyter", "provisioning", "sglang")


@pytest.fixture(scope="module")
def units() -> dict[str, Unit]:
    return load_units([UNITS])


def test_units_symlink_points_at_the_packaged_units() -> None:
    assert (REPO / "units").resolve() == UNITS.resolve()
    assert sorted(p.stem for p in UNITS.glob("*.toml")) == list(SHIPPED)


def test_vastinit_check_passes_on_the_shipped_units() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vastinit", "check", "--units", str(UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "layer 0: caddy, jupyter, provisioning",
        "layer 1: sglang",
    ]


@pytest.mark.parametrize("name", SHIPPED)
def test_each_unit_is_a_commented_template(name: str, units: dict[str, Unit]) -> None:
    text = (UNITS / f"{name}.toml").read_text()
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert text.startswith(f"# {name}: "), "the first line says what the unit is"
    assert len(comments) >= 8, "a template explains itself"
    assert units[name].description


def test_sglang_follows_the_sglang_rules(units: dict[str, Unit]) -> None:
    sglang = units["sglang"]
    assert sglang.command == ("vastinit", "launch", "sglang")
    assert sglang.condition.env == ("SGLANG_MODEL",)
    # Starts after provisioning even when it failed, as the previous image did.
    assert dict(sglang.depends_on) == {"provisioning": DependencyCondition.EXITED}
    # Ready when it can serve, whatever its log level: the launcher's watcher sends READY=1.
    ready = sglang.readiness
    assert ready is not None and ready.kind is ProbeKind.NOTIFY
    assert ready.start_timeout is not None and ready.start_timeout >= 600  # cold downloads
    live = sglang.liveness
    assert live is not None and live.kind is ProbeKind.HTTP
    # The one port setting, and SGLang's generating check, given longer than its own limit
    # (SGLANG_HEALTH_CHECK_TIMEOUT, 20 s, plus the 1 s its loop sleeps first), and rarely.
    assert live.target == "http://127.0.0.1:${SGLANG_SERVER_PORT:-18000}/health_generate"
    assert live.timeout >= 25 and live.interval >= 60
    # SIGTERM to the server only: it drains and shuts its schedulers down itself.
    assert sglang.stop.mode is StopMode.MAIN and sglang.stop.signal == 15
    assert sglang.stop.timeout >= 30
    assert sglang.log.max_size >= 20 * 1024 * 1024


def test_provisioning_runs_at_every_boot_and_nothing_polls_markers(
    units: dict[str, Unit],
) -> None:
    prov = units["provisioning"]
    assert prov.type is UnitType.ONESHOT
    assert prov.command == ("vastinit", "provision")
    # HOTFIX_SCRIPT runs at every boot: the command itself skips the rest once complete.
    assert prov.condition.path_missing == () and prov.condition.path_exists == ()
    for unit in units.values():
        # Ordering is depends_on's job, never a probe or condition on a marker file.
        text = json.dumps([unit.command, unit.condition.__dict__, str(unit.readiness)])
        assert ".provisioning" not in text, unit.name


def test_caddy_and_jupyter_are_wired_to_the_default_routes(units: dict[str, Unit]) -> None:
    caddy = units["caddy"]
    assert caddy.command[:2] == ("vastinit", "caddyfile") and caddy.command[-1] == "--run"
    assert caddy.condition.path_exists == ("${CADDY_BIN}",)
    jupyter = units["jupyter"]
    assert jupyter.command[0] == "jupyter-lab"
    assert "--ServerApp.ip=127.0.0.1" in jupyter.command
    assert "--ServerApp.port=18080" in jupyter.command
    assert "--IdentityProvider.token=" in jupyter.command  # Caddy does the auth
    assert jupyter.readiness is not None and jupyter.readiness.kind is ProbeKind.HTTP
    assert jupyter.readiness.target == "http://127.0.0.1:18080/api"
    # The routes come from PORTAL_CONFIG's default (8000 -> 18000, 8080 -> 18080), so that
    # a user's PORTAL_CONFIG alone decides what is published.
    assert all(unit.expose == () for unit in units.values())


def test_units_get_this_vastinit_on_path_and_its_unit_path_and_socket(
    tmp_path: Path, units_dir: Path
) -> None:
    write_unit(
        units_dir,
        "probe",
        """
        type = "oneshot"
        command = ["sh", "-c", '''
            echo PATH=$PATH; echo UNITS=$VASTINIT_UNITS; echo SOCK=$VASTINIT_SOCKET
            vastinit --version''']
        """,
    )
    v = Vastinit(units_dir, tmp_path, env={"PATH": "/usr/bin:/bin"}, control=True)
    try:
        v.wait_state("probe", "exited", timeout=20)
        lines = v.unit_lines("probe")
    finally:
        v.terminate()
    bin_dir = str(Path(sys.executable).parent)
    assert f"PATH=/usr/bin:/bin:{bin_dir}" in lines  # appended: the venv shadows nothing
    assert f"UNITS={units_dir}" in lines
    assert f"SOCK={v.socket}" in lines
    assert any(line.startswith("vastinit ") for line in lines)


# ---- a "fresh machine": no Caddy, no JupyterLab, no model ----------------------------------


class BareRun:
    """``vastinit run`` on units/ under a Python whose bin dir has no JupyterLab, with a
    PATH that holds only ``vastinit``: what a machine without the stack's programs looks like."""

    def __init__(self, tmp: Path) -> None:
        base_bin = Path(sys.base_prefix) / "bin"
        python = base_bin / f"python{sys.version_info.major}.{sys.version_info.minor}"
        if not python.exists() or (base_bin / "jupyter-lab").exists():
            pytest.skip(f"needs a base Python without JupyterLab ({base_bin})")
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        (bin_dir / "vastinit").symlink_to(Path(sys.executable).parent / "vastinit")
        self.socket = tmp / "vastinit.sock"
        self.output = (tmp / "stdout.jsonl").open("w")
        env = {
            "PATH": str(bin_dir),
            # The venv's packages, without the venv's bin dir (where jupyter-lab is).
            "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}",
            "HOME": str(tmp),
            "VASTINIT_LOG_FORMAT": "json",
            "VASTINIT_MARKER_DIR": str(tmp / "markers"),
            "WORKSPACE": str(tmp),
            # Where Debian puts it; not installed here (this machine may well have one).
            "CADDY_BIN": str(tmp / "usr-bin-caddy"),
        }
        self.proc = subprocess.Popen(
            [
                *(str(python), "-m", "vastinit", "run", "--units", str(UNITS)),
                *("--log-dir", str(tmp / "logs"), "--socket", str(self.socket)),
            ],
            env=env,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )

    def status(self) -> dict[str, dict[str, Any]]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "vastinit",
                "ctl",
                "--socket",
                str(self.socket),
                "status",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode not in (0, 3):
            return {}
        return {u["name"]: u for u in json.loads(result.stdout)["units"]}

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self.output.close()


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[BareRun]:
    run = BareRun(tmp_path)
    yield run
    run.stop()


def test_fresh_machine_skips_what_it_cannot_run_with_the_reason(
    bare: BareRun, tmp_path: Path
) -> None:
    settled = {"skipped", "exited"}
    units = wait_until(
        lambda: (s := bare.status()) and all(u["state"] in settled for u in s.values()) and s,
        30,
        "every shipped unit to be skipped or done",
        interval=0.1,
    )
    states = {name: (u["state"], u["cause"]) for name, u in units.items()}
    assert states == {
        "caddy": ("skipped", f"{tmp_path / 'usr-bin-caddy'} does not exist"),
        "jupyter": ("skipped", "program not found: jupyter-lab"),
        "provisioning": ("exited", states["provisioning"][1]),
        "sglang": ("skipped", "SGLANG_MODEL is not set"),
    }
    assert (tmp_path / "markers" / ".provisioning_complete").exists()
    assert all(u["restarts"] == 0 for u in units.values())
    assert bare.stop() == 0
