"""HTTPS with real Caddy, started the way the caddy unit starts it (``vastinit caddyfile
--run``), in front of the echo upstream; checked with real curl against 127.0.0.1.

The instance certificate is a valid pair, a mismatched one, an expired one or none at all;
the platform's signing endpoint is a stand-in on 127.0.0.1 (tests/tls_standin.py), up or
down. Everything is written under the test's temporary directory, never /etc.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import CADDY, caddy, free_port, port_open, upstream
from tests.harness import REPO, Vastinit, wait_until
from tests.tls_standin import (
    CA,
    StandIn,
    expired_pair,
    make_ca,
    mismatched_pair,
    openssl,
    signing_standin,
    valid_pair,
)
from vastinit.stack import certs

CURL = shutil.which("curl")
pytestmark = [
    pytest.mark.skipif(not CADDY.exists(), reason=f"{CADDY} is not installed"),
    pytest.mark.skipif(CURL is None, reason="curl is not installed"),
]

TOKEN = "tls-Token_93f1"
COOKIE = "C.7_auth_token"
BEARER = f"Authorization: Bearer {TOKEN}"
BROWSER = ["-H", "Accept: text/html,*/*;q=0.8", "-H", "Sec-Fetch-Mode: navigate"]


@dataclass
class Reply:
    code: int
    headers: dict[str, list[str]]  # lower-case names
    body: str
    error: str  # curl's stderr (a TLS failure says why)

    def header(self, name: str) -> str:
        return ", ".join(self.headers.get(name.lower(), []))

    def upstream(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


def curl(url: str, *args: str, cacert: Path | None = None) -> Reply:
    """One request with real curl (no proxy, 10 s at most); the last response's headers."""
    assert CURL is not None
    with tempfile.TemporaryDirectory() as scratch:
        head, body = Path(scratch) / "headers", Path(scratch) / "body"
        command = [CURL, "-sS", "--noproxy", "*", "--max-time", "10", "-D", str(head)]
        command += ["-o", str(body), "-w", "%{http_code}"]
        if cacert is not None:
            command += ["--cacert", str(cacert)]
        done = subprocess.run([*command, *args, url], capture_output=True, text=True)
        headers: dict[str, list[str]] = {}
        for line in (head.read_text() if head.exists() else "").splitlines():
            if line.startswith("HTTP/"):
                headers = {}  # a redirect followed: keep the last response's
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), []).append(value.strip())
        text = body.read_text() if body.exists() else ""
    return Reply(int(done.stdout or 0), headers, text, done.stderr)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def echo() -> Iterator[int]:
    port = free_port()
    with upstream(port):
        yield port


@pytest.fixture(scope="module")
def down() -> Iterator[str]:
    """A signing URL on 127.0.0.1 that refuses connections (bound, never listening): the
    default of every edge here, so that no test ever reaches the real endpoint."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{closed.getsockname()[1]}/api/v0/sign_cert/"


@pytest.fixture
def standin(ca: CA) -> Iterator[StandIn]:
    with signing_standin(ca) as running:
        yield running


@dataclass
class Edge:
    port: int
    cert: Path
    key: Path
    status: str  # the STATUS= `vastinit caddyfile --run` sent before exec'ing Caddy
    log: Path


def edge_env(tmp: Path, port: int, echo: int, down: str, **extra: str) -> dict[str, str]:
    return {
        "VASTINIT_SIGN_CERT_URL": down,
        "PYTHONPATH": str(REPO),
        "PORTAL_CONFIG": f"localhost:{port}:{echo}:/:Echo",
        "ENABLE_HTTPS": "true",
        "CADDY_TLS_CERT": str(tmp / "etc" / "instance.crt"),
        "CADDY_TLS_KEY": str(tmp / "etc" / "instance.key"),
        "CADDY_BIND": "127.0.0.1",
        "CADDY_ADMIN": "off",
        "CADDY_BIN": str(CADDY),
        "OPEN_BUTTON_TOKEN": TOKEN,
        "VAST_CONTAINERLABEL": "C.7",
        "VASTINIT_TOKEN_FILE": str(tmp / "token"),
        **extra,
    }


def run_command(tmp: Path) -> list[str]:
    (tmp / "no-units").mkdir(exist_ok=True)  # the shipped units' [[expose]] stay out of it
    return [
        sys.executable, "-m", "vastinit", "caddyfile", "--output", str(tmp / "Caddyfile"),
        "--run", "--units", str(tmp / "no-units"),
    ]  # fmt: skip


StartEdge = Callable[..., Edge]


@pytest.fixture
def start_edge(tmp_path: Path, echo: int, down: str) -> Iterator[StartEdge]:
    """``start(**env)``: the edge as the caddy unit starts it; stopped when the test ends."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify, ExitStack() as stack:
        notify.bind(str(tmp_path / "notify.sock"))
        notify.settimeout(30)

        def start(**extra: str) -> Edge:
            port = free_port()
            env = edge_env(tmp_path, port, echo, down, NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
            env.update(extra)
            stack.enter_context(caddy(tmp_path / "Caddyfile", env, [port], run_command(tmp_path)))
            status = notify.recv(4096).decode()
            assert status.startswith("STATUS="), status
            cert, key = Path(env["CADDY_TLS_CERT"]), Path(env["CADDY_TLS_KEY"])
            return Edge(port, cert, key, status.removeprefix("STATUS="), tmp_path / "caddy.log")

        yield start


def install(pair: tuple[Path, Path], tmp: Path) -> None:
    (tmp / "etc").mkdir(exist_ok=True)
    shutil.copyfile(pair[0], tmp / "etc" / "instance.crt")
    shutil.copyfile(pair[1], tmp / "etc" / "instance.key")
    os.chmod(tmp / "etc" / "instance.key", 0o600)


def check_served(edge: Edge, trust: Path) -> None:
    """curl trusting only ``trust`` gets through with the token; the key is 0600; plain
    http:// on the same port is redirected to https:// and, followed, reaches the upstream."""
    reply = curl(f"https://127.0.0.1:{edge.port}/v1/models?x=1", "-H", BEARER, cacert=trust)
    assert reply.code == 200, reply.error
    assert reply.upstream()["path"] == "/v1/models"
    assert stat.S_IMODE(edge.key.stat().st_mode) == 0o600
    plain = curl(f"http://127.0.0.1:{edge.port}/v1/models?x=1")
    assert plain.code == 308
    assert plain.header("Location") == f"https://127.0.0.1:{edge.port}/v1/models?x=1"
    # Followed as a browser does, with the auth cookie (curl, rightly, does not resend an
    # Authorization header to another scheme or port).
    cookie = f"{COOKIE}={TOKEN}"
    followed = curl(f"http://127.0.0.1:{edge.port}/v1/models", "-L", "-b", cookie, cacert=trust)
    assert followed.code == 200, followed.error
    assert followed.upstream()["path"] == "/v1/models"


def test_a_valid_pair_is_served_as_it_is(
    ca: CA, standin: StandIn, start_edge: StartEdge, tmp_path: Path
) -> None:
    install(valid_pair(ca, tmp_path), tmp_path)
    before = (tmp_path / "etc" / "instance.crt").read_bytes()
    edge = start_edge(CONTAINER_ID="4242", VASTINIT_SIGN_CERT_URL=standin.url)
    assert edge.status.startswith(f"https: serving {edge.cert}, valid until")
    assert edge.cert.read_bytes() == before and standin.requests == []
    check_served(edge, ca.cert)


@pytest.mark.parametrize("kind", ["mismatched", "expired", "none"])
def test_an_unusable_pair_is_replaced_by_one_the_platform_signs(
    ca: CA, standin: StandIn, start_edge: StartEdge, tmp_path: Path, kind: str
) -> None:
    if kind == "mismatched":
        install(mismatched_pair(ca, tmp_path), tmp_path)
    elif kind == "expired":
        install(expired_pair(ca, tmp_path), tmp_path)
    edge = start_edge(CONTAINER_ID="4242", VASTINIT_SIGN_CERT_URL=standin.url)
    reason = {"mismatched": "does not match", "expired": "expired on", "none": "missing"}[kind]
    assert edge.status.startswith("https: serving a platform-signed certificate")
    assert reason in edge.status
    assert [parse_qs(urlsplit(r["path"]).query) for r in standin.requests] == [
        {"instance_id": ["4242"]}
    ]
    check_served(edge, ca.cert)


@pytest.mark.parametrize("kind", ["mismatched", "expired", "none"])
def test_with_the_platform_down_the_pair_is_self_signed(
    ca: CA, start_edge: StartEdge, tmp_path: Path, kind: str
) -> None:
    if kind == "mismatched":
        install(mismatched_pair(ca, tmp_path), tmp_path)
    elif kind == "expired":
        install(expired_pair(ca, tmp_path), tmp_path)
    edge = start_edge(CONTAINER_ID="4242")  # the signing URL: `down`
    assert edge.status.startswith("https: serving a self-signed certificate")
    assert "platform signing failed: Connection refused (3 attempts)" in edge.status
    # The self-signed certificate is its own trust anchor; the test CA does not vouch for it.
    check_served(edge, edge.cert)
    refused = curl(f"https://127.0.0.1:{edge.port}/", "-H", BEARER, cacert=ca.cert)
    assert refused.code == 0 and "self-signed certificate" in refused.error
    assert "DNS:localhost" in openssl("x509", "-in", edge.cert, "-noout", "-ext", "subjectAltName")
    assert "caddy.certificate_rejected" in edge.log.read_text()  # said in the unit's log


# ---- the auth contract over TLS ------------------------------------------------------------


@pytest.fixture
def tls_edge(start_edge: StartEdge) -> Edge:
    edge: Edge = start_edge()
    assert edge.status.startswith("https: serving a self-signed certificate")
    return edge


def test_auth_contract_is_unchanged_over_tls(tls_edge: Edge) -> None:
    url, trust = f"https://127.0.0.1:{tls_edge.port}", tls_edge.cert
    # No credentials, or the wrong token: 401 with both challenges named.
    for args in ([], ["-H", "Authorization: Bearer nope"], ["-b", f"{COOKIE}=nope"]):
        refused = curl(f"{url}/v1/models", *args, cacert=trust)
        assert refused.code == 401, args
        assert "Bearer" in refused.header("WWW-Authenticate")
    # Bearer, the scheme in any case: let in, and the upstream never sees the token.
    for scheme in ("Bearer", "bearer", "BEARER"):
        reply = curl(f"{url}/v1/models", "-H", f"Authorization: {scheme} {TOKEN}", cacert=trust)
        assert reply.code == 200
        headers = reply.upstream()["headers"]
        assert isinstance(headers, dict) and "Authorization" not in headers
    # Another Authorization passes untouched when the cookie lets the request in.
    reply = curl(
        f"{url}/v1/models",
        *("-b", f"other=1; {COOKIE}={TOKEN}", "-H", "Authorization: Bearer upstream-key"),
        cacert=trust,
    )
    assert reply.code == 200
    headers = reply.upstream()["headers"]
    assert isinstance(headers, dict)
    assert headers["Authorization"] == "Bearer upstream-key" and headers["Cookie"] == "other=1"
    # ?token= from a browser: the cookie is set and the browser sent to the URL without it.
    nav = curl(f"{url}/lab?a=1&token={TOKEN}", *BROWSER, cacert=trust)
    assert nav.code == 302 and nav.header("Location") == "/lab?a=1"
    assert nav.header("Set-Cookie").startswith(f"{COOKIE}={TOKEN}; Path=/;")
    # ?token= from any other client: served at once, the token removed on the way.
    api = curl(f"{url}/v1/models?token={TOKEN}&b=2", cacert=trust)
    assert api.code == 200 and api.upstream()["query"] == "b=2"
    # The portal's probe answers without credentials, over TLS too.
    assert curl(f"{url}/portal-resolver", cacert=trust).body == "ok"


# ---- never plain HTTP instead -----------------------------------------------------------------


def test_no_certificate_possible_means_no_edge_not_plain_http(
    tmp_path: Path, echo: int, down: str
) -> None:
    (tmp_path / "file").write_text("")  # a file where the certificate's directory should be
    port = free_port()
    env = edge_env(
        tmp_path,
        port,
        echo,
        down,
        CADDY_TLS_CERT=str(tmp_path / "file" / "instance.crt"),
        CADDY_TLS_KEY=str(tmp_path / "file" / "instance.key"),
    )
    done = subprocess.run(
        run_command(tmp_path),
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "VASTINIT_ROLE": "workstation",  # never this machine's /etc/portal.yaml
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "cannot write the instance certificate" in done.stderr
    assert not port_open(port)  # Caddy never started: no plain HTTP on the port


# ---- ctl status -------------------------------------------------------------------------------


def test_ctl_status_says_which_certificate_is_served_and_why(
    tmp_path: Path, echo: int, down: str
) -> None:
    units = tmp_path / "units"
    units.mkdir()
    shutil.copyfile(REPO / "vastinit" / "units" / "caddy.toml", units / "caddy.toml")
    port = free_port()
    home = tmp_path / "home"
    env = {
        **edge_env(tmp_path, port, echo, down),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "WORKSPACE": str(tmp_path / "workspace"),
        "PUBLIC_IPADDR": "203.0.113.9",
    }
    v = Vastinit(units, tmp_path, env=env, control=True)
    try:
        v.wait_control()
        v.wait_state("caddy", "ready", timeout=60)
        table = v.ctl("status", "caddy")
        assert table.returncode == 0, table.stderr
        line = table.stdout.splitlines()[1]
        assert line.startswith("caddy ") and " ready " in line
        cell = "https: serving a self-signed certificate, valid until"
        assert cell in line, table.stdout
        unit = json.loads(v.ctl("status", "--json", "caddy").stdout)["units"][0]
        assert (
            "rejected " + str(tmp_path / "etc" / "instance.crt") + ": missing"
            in (unit["status_text"])
        )
        # VAST_CONTAINERLABEL=C.7: instance 7 (as before); the endpoint here is `down`.
        assert "platform signing failed: Connection refused (3 attempts)" in unit["status_text"]
        cert = tmp_path / "etc" / "instance.crt"
        assert certs.check_pair(cert, tmp_path / "etc" / "instance.key").self_signed
        reply = curl(f"https://127.0.0.1:{port}/x", "-H", BEARER, cacert=cert)
        assert reply.code == 200, reply.error
    finally:
        v.terminate()
    wait_until(lambda: not port_open(port), 10, "Caddy to stop listening")
