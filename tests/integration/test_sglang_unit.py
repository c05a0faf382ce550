"""The sglang unit's launch under a real vastinit: a refused setting is one line in the unit's
log and in ``ctl status``, before any server starts; a multi-node worker becomes ready."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from tests.harness import PROGRAMS, Vastinit, write_unit

Start = Callable[..., Vastinit]
FAKE_SGLANG = PROGRAMS / "fake_sglang.py"


def _sglang_unit(units_dir: Path, tmp_path: Path, sglang_args: str, *, port: int = 0) -> None:
    """The shipped unit's launch and readiness, with the stand-in as the server."""
    server = [sys.executable, str(FAKE_SGLANG), "--fake-load-seconds=0.2"]
    env = {
        "SGLANG_MODEL": "org/model",
        "SGLANG_SERVER_CMD": shlex.join(server),
        "SGLANG_ARGS": sglang_args,
        "SGLANG_ARGS_FILE": str(tmp_path / "absent.conf"),
        "WORKSPACE": str(tmp_path / "ws"),
        "AUTO_PARALLEL": "false",
    }
    if port:
        env["SGLANG_SERVER_PORT"] = str(port)
    table = ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items())
    write_unit(
        units_dir,
        "sglang",
        f"""
        command = ["vastinit", "launch", "sglang"]
        environment = {{ {table} }}
        [readiness]
        notify = true
        start_timeout = "30s"
        [restart]
        policy = "never"
        [stop]
        mode = "main"
        timeout = "5s"
        """,
    )


def test_a_refused_setting_is_one_line_in_the_log_and_in_ctl_status(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    _sglang_unit(units_dir, tmp_path, "--port 9000")
    v = vastinit_run(control=True)
    v.wait_control()
    v.wait_state("sglang", "failed", timeout=30)
    reason = "--port 9000 (SGLANG_ARGS) is not SGLANG_SERVER_PORT (18000)"
    assert any(reason in line for line in v.unit_lines("sglang"))
    table = v.ctl("status", "sglang").stdout
    assert "exit 2" in table and "(status: refused: " + reason in table, table
    assert not any("server_args=" in line for line in v.unit_lines("sglang")), "no server ran"


def test_a_multi_node_worker_rank_becomes_ready(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    from tests.e2e.conftest import free_port

    port = free_port()
    _sglang_unit(units_dir, tmp_path, "--nnodes 2 --node-rank 1 --tp 2", port=port)
    v = vastinit_run(control=True)
    v.wait_control()
    v.wait_state("sglang", "ready", timeout=30)
    status = json.loads(v.ctl("status", "--json", "sglang").stdout)["units"][0]
    assert status["status_text"] == "serving: GET /health 200"
    assert v.terminate() == 0
