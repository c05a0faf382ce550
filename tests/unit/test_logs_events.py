"""vastinit's own events: one line each through the console, JSON on request, secrets masked."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import pytest
import structlog

from vastinit.logs.console import ConsoleSink
from vastinit.logs.events import configure_structlog


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def pipe_console() -> Iterator[tuple[ConsoleSink, int]]:
    r, w = os.pipe2(os.O_CLOEXEC)
    yield ConsoleSink(w, color=False), r
    os.close(r)
    os.close(w)


def lines_of(pipe_console: tuple[ConsoleSink, int]) -> list[str]:
    console, r = pipe_console
    console.close()
    os.set_blocking(r, False)
    text = os.read(r, 1 << 20).decode()
    assert text.endswith("\n")
    return text.splitlines()


def test_text_events_are_one_prefixed_key_value_line(
    pipe_console: tuple[ConsoleSink, int],
) -> None:
    console, _ = pipe_console
    console.register("provisioning")  # the prefix is padded like every unit's
    configure_structlog(console, "text")
    log = structlog.get_logger("vastinit")
    log.info("state changed", unit="sglang", state="ready", cause="log line matched")
    log.warning("restart limit\nreached", restarts=5, delays=[1, 2])
    assert lines_of(pipe_console) == [
        'vastinit     | state changed unit=sglang state=ready cause="log line matched"',
        "vastinit     | warning: restart limit\\nreached restarts=5 delays=[1,2]",
    ]


def test_json_events_are_objects_with_ts_unit_level_event(
    pipe_console: tuple[ConsoleSink, int],
) -> None:
    console = ConsoleSink(pipe_console[0].fd, fmt="json")
    configure_structlog(console, "json")
    log = structlog.get_logger()
    log.info("vastinit starting", pid=1)
    log.error("state changed", unit="sglang", state="failed")
    first, second = (json.loads(line) for line in lines_of((console, pipe_console[1])))
    assert set(first) == {"ts", "unit", "level", "event", "pid"}
    assert (first["unit"], first["level"], first["event"], first["pid"]) == (
        "vastinit",
        "info",
        "vastinit starting",
        1,
    )
    # An event about a unit carries the unit's name, so filtering by unit shows its lifecycle.
    assert (second["unit"], second["level"], second["state"]) == ("sglang", "error", "failed")


def test_secrets_are_masked_by_key_name_anywhere(pipe_console: tuple[ConsoleSink, int]) -> None:
    console, _ = pipe_console
    configure_structlog(console, "json")
    structlog.get_logger().info(
        "spawn",
        OPEN_BUTTON_TOKEN="tok-123",
        web_password="pw-456",
        environment={"HF_TOKEN": "hf-789", "HOME": "/workspace", "JWT_SECRET": "s-000"},
        argv=["env", "HF_TOKEN=hf-333", "sglang", "--api-key", "key-111", "--admin-token=tok-222"],
        empty_token="",
    )
    (line,) = lines_of(pipe_console)
    for secret in ("tok-123", "pw-456", "hf-789", "s-000", "hf-333", "key-111", "tok-222"):
        assert secret not in line
    record = json.loads(line)
    assert record["OPEN_BUTTON_TOKEN"] == record["web_password"] == "***"
    assert record["environment"] == {"HF_TOKEN": "***", "HOME": "/workspace", "JWT_SECRET": "***"}
    argv = ["env", "HF_TOKEN=***", "sglang", "--api-key", "***", "--admin-token=***"]
    assert record["argv"] == argv
    assert record["empty_token"] == ""  # nothing to hide: an empty value says it is unset


def test_without_a_console_events_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_structlog(None, "text")
    structlog.get_logger().info("checked", units=4, password="hunter2")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "vastinit | checked units=4 password=***\n"


def test_stdlib_warnings_come_out_as_events(pipe_console: tuple[ConsoleSink, int]) -> None:
    console, _ = pipe_console
    configure_structlog(console, "text")
    logging.getLogger("asyncio").warning("Task was destroyed but it is pending!")
    logging.getLogger("aiohttp.access").info("GET / 200")  # below WARNING: not shown
    assert lines_of(pipe_console) == [
        "vastinit | warning: Task was destroyed but it is pending! logger=asyncio"
    ]


def test_debug_is_hidden_unless_asked_for(pipe_console: tuple[ConsoleSink, int]) -> None:
    console, _ = pipe_console
    configure_structlog(console, "text", level="debug")
    structlog.get_logger().debug("probe", ok=True)
    configure_structlog(console, "text")
    structlog.get_logger().debug("hidden")
    assert lines_of(pipe_console) == ["vastinit | probe ok=true"]
