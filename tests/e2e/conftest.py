"""End-to-end helpers: free loopback ports, deadline waits, a tiny aiohttp upstream, real Caddy."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CADDY = Path("/usr/bin/caddy")

# An upstream that echoes what reached it: path, query (decoded and raw), headers, as JSON.
UPSTREAM = """
import asyncio, sys
from aiohttp import web

async def echo(request):
    return web.json_response(
        {
            "path": request.path,
            "query": request.query_string,
            "raw_query": request.raw_path.partition("?")[2],
            "headers": dict(request.headers),
        }
    )

async def main():
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    print("READY", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` every 20 ms until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Terminate ``process`` (by pid), SIGKILL it if it lingers, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def upstream(port: int) -> Iterator[subprocess.Popen[str]]:
    """The echo upstream listening on ``port`` until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM, str(port)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until it listens, or EOF if it died
        assert line.strip() == "READY", f"upstream on {port} did not start: {line!r}"
        yield process
    finally:
        stop(process)


@contextmanager
def caddy(
    config: Path, env: dict[str, str], ports: list[int], command: list[str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Real Caddy on ``config`` (with ``env`` added), until every one of ``ports`` listens.

    ``command`` replaces ``caddy run ...`` (say, ``vastinit caddyfile --run``, which execs it).
    """
    home = config.parent / "caddy-home"
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # Never the box role here: it would read and seed this machine's /etc/portal.yaml.
        "VASTINIT_ROLE": "workstation",
        "VASTINIT_PORTAL_YAML": str(config.parent / "portal.yaml"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        **env,
    }
    log = (config.parent / "caddy.log").open("w")
    process = subprocess.Popen(
        command or [str(CADDY), "run", "--config", str(config), "--adapter", "caddyfile"],
        env=full,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for port in ports:

            def listening(port: int = port) -> bool:
                if process.poll() is not None:
                    log.flush()
                    pytest.fail(f"caddy exited: {(config.parent / 'caddy.log').read_text()}")
                return port_open(port)

            wait_until(listening, f"caddy to listen on {port}")
        yield process
    finally:
        stop(process)
        log.close()
