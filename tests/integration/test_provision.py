"""``vastinit provision`` as a real subprocess against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from vastinit.stack.provision import Retry, apt_commands, pip_command, redact, script_command

OK_SCRIPT = (
    'echo "hello from provisioning"\n'
    '[ -f "$VASTINIT_MARKER_DIR/.provisioning" ] && echo IN-WINDOW\n'
)
CRLF_SCRIPT = b'x=abc\r\nif [ "$x" = abc ]; then echo CRLF-OK; else echo CRLF-BROKEN; fi\r\n'
FLAKY_FAILURES = 2


class ScriptServer:
    """aiohttp on a background thread's loop; counts requests per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] += 1
        if name == "ok.sh":
            return web.Response(text=OK_SCRIPT)
        if name == "crlf.sh":
            return web.Response(body=CRLF_SCRIPT)
        if name == "flaky.sh" and self.hits[name] > FLAKY_FAILURES:
            return web.Response(text="echo FLAKY-OK\n")
        if name in ("flaky.sh", "broken.sh"):
            return web.Response(status=500, text="boom")
        if name == "hang.sh":
            await self._release.wait()  # never answers while the test runs
            return web.Response(text="echo too late\n")
        return web.Response(status=404, text="not here")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _stop(self) -> None:
        self._release.set()
        assert self._runner is not None
        await self._runner.cleanup()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptServer]:
    srv = ScriptServer()
    srv.start()
    yield srv
    srv.stop()


def _env(markers: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROVISIONING_", "HOTFIX_", "APT_", "PIP_", "VASTINIT_"))
    }
    env.update(
        {
            "VASTINIT_MARKER_DIR": str(markers),
            "APT_PACKAGES": "",
            "PIP_PACKAGES": "",
            "PROVISIONING_TIMEOUT": "5",
            "PROVISIONING_RETRIES": "3",
            "PROVISIONING_RETRY_DELAY": "0.05",
        }
    )
    env.update(extra)
    return env


def provision(markers: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vastinit", "provision", *args],
        env=_env(markers, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def marker_names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.startswith(".provisioning")}


def test_script_from_url_runs_and_marks_complete(tmp_path: Path, server: ScriptServer) -> None:
    result = provision(tmp_path, PROVISIONING_SCRIPT=server.url("/ok.sh"))
    assert result.returncode == 0, result.stderr
    assert "hello from provisioning" in result.stdout
    assert "IN-WINDOW" in result.stdout  # /.provisioning existed while the script ran
    assert marker_names(tmp_path) == {".provisioning_complete"}
    assert (tmp_path / "provisioning.sh").read_text() == OK_SCRIPT


def test_404_fails_at_once_naming_url_and_status(tmp_path: Path, server: ScriptServer) -> None:
    url = server.url("/missing.sh")
    before = server.hits["missing.sh"]
    result = provision(tmp_path, PROVISIONING_SCRIPT=url)
    assert result.returncode == 1
    assert f"{url}: HTTP 404" in result.stderr
    assert marker_names(tmp_path) == {".provisioning_failed"}
    assert server.hits["missing.sh"] - before == 1  # a 404 is not retried


def test_server_that_never_answers_times_out_per_attempt(
    tmp_path: Path, server: ScriptServer
) -> None:
    url = server.url("/hang.sh")
    before = server.hits["hang.sh"]
    started = time.monotonic()
    result = provision(
        tmp_path, PROVISIONING_SCRIPT=url, PROVISIONING_TIMEOUT="0.3", PROVISIONING_RETRIES="2"
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert f"{url}: no complete answer within 0.3s (gave up after 2 attempts)" in result.stderr
    assert server.hits["hang.sh"] - before == 2
    assert elapsed < 20, "the per-attempt timeout did not cut the download short"
    assert marker_names(tmp_path) == {".provisioning_failed"}


def test_server_errors_are_retried_until_success(tmp_path: Path, server: ScriptServer) -> None:
    result = provision(tmp_path, PROVISIONING_SCRIPT=server.url("/flaky.sh"))
    assert result.returncode == 0, result.stderr
    assert "FLAKY-OK" in result.stdout
    assert server.hits["flaky.sh"] == FLAKY_FAILURES + 1
    assert result.stderr.count("provision.download_retry") == FLAKY_FAILURES
    assert "HTTP 500" in result.stderr
    assert marker_names(tmp_path) == {".provisioning_complete"}


def test_retries_give_up_naming_the_last_status(tmp_path: Path, server: ScriptServer) -> None:
    url = server.url("/broken.sh")
    result = provision(tmp_path, PROVISIONING_SCRIPT=url, PROVISIONING_RETRIES="2")
    assert result.returncode == 1
    assert f"{url}: HTTP 500 Internal Server Error (gave up after 2 attempts)" in result.stderr


def test_crlf_script_is_normalised(tmp_path: Path, server: ScriptServer) -> None:
    result = provision(tmp_path, PROVISIONING_SCRIPT=server.url("/crlf.sh"))
    assert result.returncode == 0, result.stderr
    assert "CRLF-OK" in result.stdout
    assert b"\r" not in (tmp_path / "provisioning.sh").read_bytes()


def test_local_script_path_runs_with_its_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "setup.py"
    script.write_text(f"#!{sys.executable}\nprint('python said hi')\n")
    result = provision(tmp_path, PROVISIONING_SCRIPT=str(script))
    assert result.returncode == 0, result.stderr
    assert "python said hi" in result.stdout


def test_missing_local_script_fails_with_its_path(tmp_path: Path) -> None:
    result = provision(tmp_path, PROVISIONING_SCRIPT=str(tmp_path / "nope.sh"))
    assert result.returncode == 1
    assert f"cannot read {tmp_path / 'nope.sh'}" in result.stderr
    assert marker_names(tmp_path) == {".provisioning_failed"}


def test_failing_script_marks_failed_and_a_later_success_clears_it(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("echo trying; exit 3\n")
    failed = provision(tmp_path, PROVISIONING_SCRIPT=str(script))
    assert failed.returncode == 1
    assert "exited with status 3" in failed.stderr and "trying" in failed.stdout
    assert marker_names(tmp_path) == {".provisioning_failed"}
    script.write_text("echo fixed\n")
    fixed = provision(tmp_path, PROVISIONING_SCRIPT=str(script))
    assert fixed.returncode == 0
    assert marker_names(tmp_path) == {".provisioning_complete"}


def test_nothing_to_do_still_completes(tmp_path: Path) -> None:
    result = provision(tmp_path)
    assert result.returncode == 0, result.stderr
    assert marker_names(tmp_path) == {".provisioning_complete"}


def test_completed_provisioning_is_skipped_but_the_hotfix_runs(
    tmp_path: Path, server: ScriptServer
) -> None:
    (tmp_path / ".provisioning_complete").touch()
    hotfix = tmp_path / "hotfix.sh"
    hotfix.write_text("echo HOTFIX-RAN\n")
    before = server.hits["ok.sh"]
    result = provision(
        tmp_path, PROVISIONING_SCRIPT=server.url("/ok.sh"), HOTFIX_SCRIPT=str(hotfix)
    )
    assert result.returncode == 0, result.stderr
    assert "HOTFIX-RAN" in result.stdout
    assert "hello from provisioning" not in result.stdout
    assert server.hits["ok.sh"] == before  # not even downloaded
    assert "provision.skipped" in result.stderr
    forced = provision(tmp_path, "--force", PROVISIONING_SCRIPT=server.url("/ok.sh"))
    assert "hello from provisioning" in forced.stdout


def test_hotfix_runs_first_and_its_failure_does_not_stop_provisioning(
    tmp_path: Path, server: ScriptServer
) -> None:
    script = tmp_path / "s.sh"
    script.write_text("echo SCRIPT-RAN\n")
    result = provision(
        tmp_path, HOTFIX_SCRIPT=server.url("/missing.sh"), PROVISIONING_SCRIPT=str(script)
    )
    assert result.returncode == 0, result.stderr
    assert "provision.hotfix_failed" in result.stderr and "HTTP 404" in result.stderr
    assert "SCRIPT-RAN" in result.stdout


def test_apt_then_pip_then_script_in_order(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("apt-get", "uv"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name.upper()} $*"\n')
        tool.chmod(0o755)
    script = tmp_path / "s.sh"
    script.write_text("echo SCRIPT\n")
    result = provision(
        tmp_path,
        APT_PACKAGES="curl  htop",
        PIP_PACKAGES="requests 'numpy>=1.26'",
        PROVISIONING_PYTHON="/opt/py/bin/python",
        PROVISIONING_SCRIPT=str(script),
        PATH=f"{bin_dir}:/usr/bin:/bin",
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines == [
        "APT-GET update",
        "APT-GET install --no-install-recommends -y curl htop",
        "UV pip install --python /opt/py/bin/python requests numpy>=1.26",
        "SCRIPT",
    ]


def test_failing_apt_stops_before_the_script(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\necho 'E: no network' >&2\nexit 100\n")
    (bin_dir / "apt-get").chmod(0o755)
    script = tmp_path / "s.sh"
    script.write_text("echo SCRIPT\n")
    result = provision(
        tmp_path,
        APT_PACKAGES="curl",
        PROVISIONING_SCRIPT=str(script),
        PATH=f"{bin_dir}:/usr/bin:/bin",
    )
    assert result.returncode == 1
    assert "APT_PACKAGES: apt-get update exited with status 100" in result.stderr
    assert "SCRIPT" not in result.stdout
    assert marker_names(tmp_path) == {".provisioning_failed"}


def test_sigterm_during_the_script_still_leaves_clean_markers(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("echo STARTED\nexec sleep 60\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "vastinit", "provision"],
        env=_env(tmp_path, PROVISIONING_SCRIPT=str(script)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "STARTED"  # the script is running
        assert (tmp_path / ".provisioning").exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert marker_names(tmp_path) == {".provisioning_failed"}


def test_bad_retry_setting_is_a_clear_error(tmp_path: Path) -> None:
    result = provision(tmp_path, PROVISIONING_RETRIES="many")
    assert result.returncode == 2
    assert "PROVISIONING_RETRIES" in result.stderr
    assert marker_names(tmp_path) == set()


# --- the pure parts, table-driven -------------------------------------------------------------


@pytest.mark.parametrize(
    ("packages", "launch_mode", "expected"),
    [
        ([], False, []),
        (
            ["curl"],
            False,
            [
                ["apt-get", "update"],
                ["apt-get", "install", "--no-install-recommends", "-y", "curl"],
            ],
        ),
        (["a", "b"], True, [["apt-get", "install", "--no-install-recommends", "-y", "a", "b"]]),
    ],
)
def test_apt_commands(packages: list[str], launch_mode: bool, expected: list[list[str]]) -> None:
    assert apt_commands(packages, launch_mode=launch_mode) == expected


@pytest.mark.parametrize(
    ("packages", "uv", "expected"),
    [
        ([], "/usr/bin/uv", None),
        (["x"], "/usr/bin/uv", ["/usr/bin/uv", "pip", "install", "--python", "/py", "x"]),
        (["x", "y>=2"], None, ["/py", "-m", "pip", "install", "--no-input", "x", "y>=2"]),
    ],
)
def test_pip_command(packages: list[str], uv: str | None, expected: list[str] | None) -> None:
    assert pip_command(packages, python="/py", uv=uv) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"#!/usr/bin/env python3\nprint(1)\n", ["/w/s"]),
        (b"#!/bin/bash\necho\n", ["/w/s"]),
        (b"echo no shebang\n", ["bash", "/w/s"]),
        (b"", ["bash", "/w/s"]),
    ],
)
def test_script_command(data: bytes, expected: list[str]) -> None:
    assert script_command(Path("/w/s"), data) == expected


def test_backoff_doubles_up_to_the_cap() -> None:
    retry = Retry(delay=2.0, max_delay=10.0)
    assert [retry.backoff(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://example.com/s.sh", "https://example.com/s.sh"),
        ("https://me:secret@example.com:8443/s.sh?x=1", "https://me:***@example.com:8443/s.sh?x=1"),
    ],
)
def test_passwords_in_urls_are_not_shown(url: str, shown: str) -> None:
    assert redact(url) == shown
