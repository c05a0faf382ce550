"""Health building blocks without I/O: notify parsing, targets, names, error texts, reporting."""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest

from vastinit.health.notify import parse_notify
from vastinit.health.probes import describe
from vastinit.health.report import ProbeErrors, ProbeLog
from vastinit.health.result import connect_error_text
from vastinit.health.tcp_probe import split_hostport
from vastinit.model import Probe, ProbeKind


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"READY=1", {"READY": "1"}),
        (b"READY=1\nSTATUS=serving 3 models\n", {"READY": "1", "STATUS": "serving 3 models"}),
        (b"STATUS=a=b", {"STATUS": "a=b"}),
        (b"MAINPID=42\nSTOPPING=1", {"MAINPID": "42", "STOPPING": "1"}),
        (b"garbage\n=novalue\nSTATUS=", {"STATUS": ""}),
        (b"", {}),
        (b"STATUS=caf\xc3\xa9 \xff", {"STATUS": "caf\u00e9 \ufffd"}),
    ],
)
def test_parse_notify(data: bytes, expected: dict[str, str]) -> None:
    assert parse_notify(data) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:80", ("::1", 80)),
    ],
)
def test_split_hostport(target: str, expected: tuple[str, int]) -> None:
    assert split_hostport(target) == expected


@pytest.mark.parametrize("target", ["8000", ":80", "host:", "host:http", "host:0", "h:70000"])
def test_split_hostport_rejects(target: str) -> None:
    with pytest.raises(ValueError, match="expected host:port"):
        split_hostport(target)


@pytest.mark.parametrize(
    ("probe", "name"),
    [
        (
            Probe(ProbeKind.HTTP, "http://127.0.0.1:8000/health"),
            "http http://127.0.0.1:8000/health",
        ),
        (Probe(ProbeKind.TCP, "127.0.0.1:22"), "tcp 127.0.0.1:22"),
        (Probe(ProbeKind.EXEC, ("test", "-S", "/run/a b.sock")), "exec test -S '/run/a b.sock'"),
        (Probe(ProbeKind.LOG, "fired up"), "log /fired up/"),
        (Probe(ProbeKind.NOTIFY, ""), "notify"),
    ],
)
def test_describe(probe: Probe, name: str) -> None:
    assert describe(probe) == name


def test_connect_error_text_finds_the_socket_error_in_the_chain() -> None:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")
        except OSError as inner:
            raise OSError("All connection attempts failed") from inner
    except OSError as outer:
        assert connect_error_text(outer) == "connection refused"
    assert connect_error_text(OSError(errno.EHOSTUNREACH, "No route to host")) == (
        "no route to host"
    )
    gai = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert connect_error_text(gai) == "cannot resolve: Name or service not known"
    assert connect_error_text(RuntimeError("odd")) == "odd"


class RecordingLog:
    """Collects (level, event, fields) as a structlog logger would emit them."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.records.append((level, event, kw))


def test_probe_log_logs_each_distinct_failure_once_and_the_recovery() -> None:
    published: list[str | None] = []
    errors = ProbeErrors(published.append)
    log = RecordingLog()
    plog = ProbeLog(log, "readiness", "tcp x:1", errors, announce_first=True)
    for error in ["connection refused"] * 5 + ["HTTP 503"] * 3:
        plog.failed(error)
    plog.passed("HTTP 200", 0.002, after="1s")
    plog.passed("HTTP 200", 0.002)
    plog.failed("HTTP 503", level="warning")
    plog.failed("HTTP 503", level="warning")
    plog.passed("HTTP 200")
    assert [(lvl, ev, kw.get("error") or kw.get("result")) for lvl, ev, kw in log.records] == [
        ("info", "readiness probe failed", "connection refused"),
        ("info", "readiness probe failed", "HTTP 503"),
        ("info", "readiness probe passed", "HTTP 200"),
        ("warning", "readiness probe failed", "HTTP 503"),
        ("info", "readiness probe passed again", "HTTP 200"),
    ]
    assert log.records[2][2]["took"] == "2ms" and log.records[2][2]["after"] == "1s"
    assert published[-1] is None and "readiness: HTTP 503" in published


def test_probe_log_counts_consecutive_failures_and_a_pass_resets_them() -> None:
    plog = ProbeLog(
        RecordingLog(), "liveness", "exec false", ProbeErrors(lambda _: None), announce_first=False
    )
    plog.failed("exit 1")
    plog.failed("exit 1")
    assert plog.failures == 2
    plog.passed("exit 0")
    assert plog.failures == 0 and plog.last_error is None
    plog.failed("exit 2")
    assert plog.failures == 1 and plog.last_error == "exit 2"


def test_probe_errors_combine_roles_until_each_passes() -> None:
    published: list[str | None] = []
    errors = ProbeErrors(published.append)
    errors.set("readiness", "HTTP 503")
    errors.set("liveness", "exit 1")
    assert published[-1] == "liveness: exit 1; readiness: HTTP 503"
    errors.set("liveness", None)
    assert published[-1] == "readiness: HTTP 503"
    errors.set("readiness", None)
    assert published[-1] is None
