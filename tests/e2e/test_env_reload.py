"""Issue 22, "env files change nothing by surprise", on the shipped stack (SGLang stand-in):
an edited ${WORKSPACE}/.env and ``ctl reload`` leave SGLang's process alone and mark it
"restart to apply"; ``ctl restart sglang`` applies it; a unit that opted in with
``restart_on_env`` is restarted only when a variable it lists changes."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CADDY, free_port
from tests.e2e.test_stack import FAKE_SGLANG, Stack, start_stack, stop_stack
from tests.harness import wait_until

pytestmark = pytest.mark.skipif(not CADDY.exists(), reason=f"{CADDY} is not installed")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    edge, port = free_port(), free_port()
    server = [
        sys.executable,
        str(FAKE_SGLANG),
        "--fake-load-seconds=0.2",
        "--fake-warmup-seconds=0.2",
    ]
    v, markers, gate = start_stack(
        tmp_path,
        edge=edge,
        target=port,
        env={
            "PORTAL_CONFIG": f"localhost:{edge}:{port}:/docs:SGLang API",
            "SGLANG_MODEL": "fake-org/Fake-1B",
            "SGLANG_SERVER_CMD": shlex.join(server),
            "SGLANG_SERVER_PORT": str(port),  # the launcher, probes and route follow it
            "SGLANG_ARGS": "--served-model-name fake",
        },
        dropins={"jupyter": {"enabled": False}},
    )
    gate.touch()  # provisioning may finish at once
    stack = Stack(v, tmp_path, edge, port, markers)
    try:
        v.wait_control()
        v.wait_state("caddy", "ready", timeout=30)
        v.wait_state("sglang", "ready", timeout=60)
        yield stack
    finally:
        stop_stack(v)


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def reload(stack: Stack) -> list[str]:
    result = stack.v.ctl("reload", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def everything(stack: Stack) -> dict[str, dict[str, Any]]:
    result = stack.v.ctl("status", "--json")
    assert result.returncode in (0, 3), result.stderr
    return {u["name"]: u for u in json.loads(result.stdout)["units"]}


def test_env_edit_marks_sglang_restart_to_apply_and_a_restart_applies_it(stack: Stack) -> None:
    dotenv = stack.tmp / "workspace" / ".env"
    before = everything(stack)
    assert before["sglang"].get("restart_to_apply") is None
    assert "FOO" not in environ(before["sglang"]["pid"])

    dotenv.write_text("FOO=2\n")  # echo FOO=2 > .env
    note = f"FOO added to {dotenv}"
    lines = reload(stack)
    after = everything(stack)
    # Nothing was restarted: SGLang (and Caddy, which reads the same file) keep their pid.
    for name in ("sglang", "caddy"):
        assert after[name]["pid"] == before[name]["pid"], (name, lines)
        assert after[name]["state"] == "ready", after[name]
        assert after[name]["restart_to_apply"] == note
    assert f"sglang: restart to apply: {note}" in lines
    assert f"caddy: restart to apply: {note}" in lines
    assert stack.v.states("sglang").count("ready") == 1
    table = stack.v.ctl("status", "sglang").stdout.splitlines()
    assert table[-1] == f"sglang: restart to apply: {note}"
    assert "FOO" not in environ(after["sglang"]["pid"])  # the process has the old values
    causes = [str(e.get("cause")) for e in list(stack.v.events) if e.get("unit") == "sglang"]
    assert not any("unit file changed" in cause for cause in causes), causes

    restarted = stack.v.ctl("restart", "sglang", "--timeout", "60", timeout=90)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    applied = everything(stack)
    assert applied["sglang"]["pid"] != before["sglang"]["pid"]
    assert environ(applied["sglang"]["pid"])["FOO"] == "2"
    assert applied["sglang"]["restart_to_apply"] is None  # applied: the note is gone
    assert applied["caddy"]["restart_to_apply"] == note  # Caddy was not restarted
    assert "sglang: restart to apply" not in stack.v.ctl("reread").stdout


def test_opted_in_unit_is_restarted_only_when_a_listed_variable_changes(stack: Stack) -> None:
    dotenv = stack.tmp / "workspace" / ".env"
    dotenv.write_text("FOO=1\n")
    (stack.tmp / "dropins" / "watcher.toml").write_text(
        'command = "echo foo=$$FOO bar=$$BAR; exec sleep 300"\n'
        'env_files = ["${WORKSPACE}/.env"]\n'
        'restart_on_env = ["FOO"]\n'
    )
    assert "watcher: added" in reload(stack)
    stack.v.wait_line("watcher", "foo=1 bar=", timeout=30)
    first = everything(stack)
    sglang_pid = first["sglang"]["pid"]

    dotenv.write_text("FOO=1\nBAR=1\n")  # BAR is not listed: no restart
    lines = reload(stack)
    assert f"watcher: restart to apply: BAR added to {dotenv}" in lines
    second = everything(stack)
    assert second["watcher"]["pid"] == first["watcher"]["pid"]
    assert second["sglang"]["pid"] == sglang_pid

    dotenv.write_text("FOO=2\nBAR=1\n")  # FOO is: restarted, with FOO as the cause
    lines = reload(stack)
    assert f"watcher: restarted (FOO changed in {dotenv})" in lines
    stack.v.wait_line("watcher", "foo=2 bar=1", timeout=30)
    third = wait_until(
        lambda: (s := everything(stack))["watcher"]["state"] == "ready" and s,
        30,
        "watcher ready again",
        interval=0.1,
    )
    assert third["watcher"]["pid"] != first["watcher"]["pid"]
    assert third["watcher"]["restart_to_apply"] is None
    assert stack.cause("watcher", "stopping") == f"FOO changed in {dotenv}"
    assert third["sglang"]["pid"] == sglang_pid  # not opted in: still the same process
    assert third["sglang"]["restart_to_apply"] == f"BAR, FOO added to {dotenv}"
