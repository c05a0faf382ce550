"""Credentials stop at the edge (issue 22): real Caddy on the Caddyfile `vastinit caddyfile
--run` writes for the shipped routes (SGLang's and Jupyter's, PORTAL_CONFIG's default with
its ports moved to free ones) and for users' [[expose]] routes, each in front of an upstream
that echoes what reached it. The edge token, sent as a Bearer header, as the auth cookie or
as ``?token=``, reaches none of them, except the route that declares ``pass_credentials``;
the user's own ``Authorization`` and other cookies reach every route unchanged.
"""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import CADDY, caddy, free_port, upstream
from vastinit.stack.routes import DEFAULT_PORTAL_CONFIG

pytestmark = pytest.mark.skipif(not CADDY.exists(), reason=f"{CADDY} is not installed")

REPO = Path(__file__).resolve().parents[2]
TOKEN = "edge-Tok_9c1e"
COOKIE = "C.9_auth_token"  # ${VAST_CONTAINERLABEL}_auth_token
BEARER = {"Authorization": f"Bearer {TOKEN}"}
API = {"Accept": "application/json"}
BROWSER = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
# The user's own credentials for an upstream: never the edge's to take.
OTHER_AUTHORIZATION = ["Basic dXNlcjpwYXNz", "Bearer other-token", f"Bearer {TOKEN}x"]


@dataclass
class Echo:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def seen(self) -> dict[str, object]:
        """What the echo upstream received: path, query, raw_query, headers."""
        value = json.loads(self.body)
        assert isinstance(value, dict), self.body
        return value

    @property
    def seen_headers(self) -> dict[str, str]:
        headers = self.seen["headers"]
        assert isinstance(headers, dict)
        return headers


def get(port: int, target: str, headers: dict[str, str] | None = None) -> Echo:
    """One GET, no redirect following, no cookie jar."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target, headers=headers or {})
        response = conn.getresponse()
        return Echo(response.status, response.headers, response.read().decode())
    finally:
        conn.close()


def proxied(port: int, target: str, headers: dict[str, str]) -> Echo:
    """A request the edge lets through, and the upstream's view of it, token-free."""
    reply = get(port, target, headers)
    assert reply.status == 200, reply.body
    assert TOKEN not in reply.body, f"the edge token reached the upstream: {reply.body}"
    return reply


def write_unit(directory: Path, name: str, expose: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    text = f'command = ["/bin/true"]\n\n[[expose]]\n{expose}\n'
    (directory / f"{name}.toml").write_text(text)


def shipped_portal_config(ports: dict[int, int]) -> str:
    """PORTAL_CONFIG's default (SGLang API, Jupyter, its terminal alias), ports moved."""
    entries = []
    for entry in DEFAULT_PORTAL_CONFIG.split("|"):
        host, external, internal, rest = entry.split(":", 3)
        moved = [str(ports[int(p)]) for p in (external, internal)]
        entries.append(":".join([host, *moved, rest]))
    return "|".join(entries)


@dataclass
class Edge:
    sglang: int  # PORTAL_CONFIG's default "SGLang API" route
    jupyter: int  # PORTAL_CONFIG's default "Jupyter" route
    dashboard: int  # a user unit's [[expose]]
    public: int  # a user unit's [[expose]] with auth = false
    shared: int | None  # a user unit's [[expose]] with pass_credentials = true

    @property
    def stripping(self) -> dict[str, int]:
        """The routes behind the edge's auth whose upstream must never see its token."""
        return {"sglang": self.sglang, "jupyter": self.jupyter, "dashboard": self.dashboard}


def run_edge(tmp: Path, *, shared: bool) -> Iterator[Edge]:
    """`vastinit caddyfile --run` (as the shipped caddy unit runs it) on units/ plus users'."""
    echo = free_port()
    sglang, jupyter, dashboard, public = (free_port() for _ in range(4))
    users = tmp / "units"
    write_unit(users, "dashboard", f'port = {dashboard}\ntarget = {echo}\nlabel = "Dashboard"')
    write_unit(users, "public", f"port = {public}\ntarget = {echo}\nauth = false")
    shared_port = None
    if shared:
        shared_port = free_port()
        write_unit(
            users, "tokenapp", f"port = {shared_port}\ntarget = {echo}\npass_credentials = true"
        )
    config = tmp / "Caddyfile"
    env = {
        "PORTAL_CONFIG": shipped_portal_config(
            {8000: sglang, 18000: echo, 8080: jupyter, 18080: echo}
        ),
        "OPEN_BUTTON_TOKEN": TOKEN,
        "VAST_CONTAINERLABEL": "C.9",
        "CADDY_BIND": "127.0.0.1",
        "CADDY_ADMIN": "off",
        "CADDY_BIN": str(CADDY),
        "VASTINIT_UNITS": f"{REPO / 'vastinit' / 'units'}:{users}",
        "VASTINIT_TOKEN_FILE": str(tmp / "caddy_token"),
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-m", "vastinit", "caddyfile", "--output", str(config), "--run"]
    ports = [sglang, jupyter, dashboard, public, *([shared_port] if shared_port else [])]
    with ExitStack() as stack:
        stack.enter_context(upstream(echo))
        stack.enter_context(caddy(config, env, ports, command))
        yield Edge(sglang, jupyter, dashboard, public, shared_port)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    yield from run_edge(tmp_path_factory.mktemp("edge"), shared=False)


@pytest.fixture(scope="module")
def shared_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    yield from run_edge(tmp_path_factory.mktemp("shared"), shared=True)


ROUTES = ["sglang", "jupyter", "dashboard"]


@pytest.mark.parametrize("route", ROUTES)
def test_bearer_token_reaches_no_upstream(edge: Edge, route: str) -> None:
    reply = proxied(edge.stripping[route], "/v1/models", BEARER)
    assert "Authorization" not in reply.seen_headers


# The auth cookie first, in the middle, last, alone, repeated, with and without spaces: it
# goes; the user's own cookies stay, byte for byte and in order.
COOKIES = [
    (f"{COOKIE}={TOKEN}", None),
    (f"{COOKIE}={TOKEN}; theme=dark; lang=en", "theme=dark; lang=en"),
    (f"theme=dark; {COOKIE}={TOKEN}; lang=en", "theme=dark; lang=en"),
    (f"theme=dark; lang=en; {COOKIE}={TOKEN}", "theme=dark; lang=en"),
    (f"theme=dark;{COOKIE}={TOKEN};lang=en", "theme=dark;lang=en"),
    (f"{COOKIE}={TOKEN};lang=en", "lang=en"),
    (f"{COOKIE}=old; a=1; {COOKIE}={TOKEN}; b=2; {COOKIE}=x", "a=1; b=2"),
    (f"x{COOKIE}=1; {COOKIE}={TOKEN}; {COOKIE}s=2", f"x{COOKIE}=1; {COOKIE}s=2"),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("cookie", "left"), COOKIES)
def test_auth_cookie_reaches_no_upstream(
    edge: Edge, route: str, cookie: str, left: str | None
) -> None:
    reply = proxied(edge.stripping[route], "/tree", {"Cookie": cookie})
    # The auth cookie alone: the upstream gets no Cookie header at all.
    assert reply.seen_headers.get("Cookie") == left


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("target", "credentials", "query"),
    [
        (f"/x?a=1&token={TOKEN}&b=2", {}, "a=1&b=2"),
        (f"/x?token={TOKEN}", {}, ""),
        # Let in by the cookie or the header, a token parameter that is not the first one
        # (or not the token) is removed all the same.
        (f"/x?token=x&token={TOKEN}&a=1", {"Cookie": f"{COOKIE}={TOKEN}"}, "a=1"),
        (f"/x?a=%41&%74oken={TOKEN}", BEARER, "a=%41"),
        ("/x?token=mine&n=5", BEARER, "n=5"),
        # `;` separates parameters for some upstreams; Go (and so Caddy's query matcher)
        # drops such a pair, but the upstream would still read the token in it.
        (f"/x?a=1;token={TOKEN}", BEARER, "a=1"),
        (f"/x?token={TOKEN};a=1&b=2", BEARER, "a=1&b=2"),
        (f"/x?a=1&token={TOKEN};b;token=x", {"Cookie": f"{COOKIE}={TOKEN}"}, "a=1;b"),
    ],
)
def test_query_token_reaches_no_upstream(
    edge: Edge, route: str, target: str, credentials: dict[str, str], query: str
) -> None:
    reply = proxied(edge.stripping[route], target, {**API, **credentials})
    assert reply.seen["raw_query"] == query
    assert "Cookie" not in reply.seen_headers and "Authorization" not in reply.seen_headers


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("authorization", OTHER_AUTHORIZATION)
@pytest.mark.parametrize(
    "credentials",
    [{"Cookie": f"theme=dark; {COOKIE}={TOKEN}"}, {}],
    ids=["cookie", "query"],
)
def test_other_authorization_and_cookies_reach_every_upstream_unchanged(
    edge: Edge, route: str, authorization: str, credentials: dict[str, str]
) -> None:
    target = "/v1/chat?stream=1" if credentials else f"/v1/chat?stream=1&token={TOKEN}"
    headers = {"Authorization": authorization, "Cookie": "theme=dark", **API, **credentials}
    reply = get(edge.stripping[route], target, headers)
    assert reply.status == 200, reply.body
    assert reply.seen_headers["Authorization"] == authorization
    assert reply.seen_headers["Cookie"] == "theme=dark"
    assert reply.seen["raw_query"] == "stream=1"


def test_route_without_auth_gets_no_auth_cookie_either(edge: Edge) -> None:
    # A browser sends a host's cookies to every port: the auth cookie too.
    headers = {"Cookie": f"theme=dark; {COOKIE}={TOKEN}", "Authorization": "Basic dXNlcjpwYXNz"}
    reply = proxied(edge.public, "/", headers)
    assert reply.seen_headers["Cookie"] == "theme=dark"
    assert reply.seen_headers["Authorization"] == "Basic dXNlcjpwYXNz"
    assert get(edge.public, "/").status == 200  # no auth there


def test_route_sharing_the_token_gets_every_credential(shared_edge: Edge) -> None:
    port = shared_edge.shared
    assert port is not None
    reply = get(port, "/api", BEARER)
    assert reply.status == 200, reply.body
    assert reply.seen_headers["Authorization"] == f"Bearer {TOKEN}"
    cookie = f"theme=dark; {COOKIE}={TOKEN}; lang=en"
    reply = get(port, "/api", {"Cookie": cookie})
    assert reply.status == 200, reply.body
    assert reply.seen_headers["Cookie"] == cookie
    reply = get(port, f"/api?token={TOKEN}&a=1", API)
    assert reply.status == 200, reply.body
    assert reply.seen["raw_query"] == f"token={TOKEN}&a=1"
    assert reply.headers["Set-Cookie"].startswith(f"{COOKIE}={TOKEN};")
    # A browser still gets the cookie and a clean address bar; the cookie then reaches it.
    page = get(port, f"/lab?token={TOKEN}&a=1", BROWSER)
    assert page.status == 302 and page.headers["Location"] == "/lab?a=1"
    # The edge still checks the token there.
    assert get(port, "/api").status == 401
    assert get(port, "/api", {"Authorization": "Bearer other-token"}).status == 401


def test_the_other_routes_of_that_edge_still_strip(shared_edge: Edge) -> None:
    for port in shared_edge.stripping.values():
        reply = proxied(port, f"/x?token={TOKEN}", {**BEARER, **API, "Cookie": f"{COOKIE}=1"})
        assert "Authorization" not in reply.seen_headers and "Cookie" not in reply.seen_headers
