"""Real Caddy on the generated Caddyfile, in front of a real aiohttp upstream: the auth contract.

Ports are free high loopback ports picked here; Caddy binds 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import CADDY, caddy, free_port, upstream
from vastinit.stack.caddy import auth_from_env, basic_credentials, render_caddyfile
from vastinit.stack.routes import Route

pytestmark = pytest.mark.skipif(not CADDY.exists(), reason=f"{CADDY} is not installed")

TOKEN = "tok-Abc123_button"
PASSWORD = "pw-Xyz789_web"
COOKIE = "C.7_auth_token"


@dataclass
class Edge:
    authed: int  # -> echo upstream, token required
    excluded: int  # -> echo upstream, in AUTH_EXCLUDE
    slow: int  # -> a second upstream that is down until a test starts it
    slow_upstream: int
    config: Path


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


def get(port: int, target: str, headers: dict[str, str] | None = None) -> Reply:
    """One GET, no redirect following, no cookie jar: exactly what the edge answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read().decode())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    authed, excluded, slow, echo_port, slow_upstream = (free_port() for _ in range(5))
    routes = [
        Route(authed, echo_port, label="Echo"),
        Route(excluded, echo_port, label="Open"),
        Route(slow, slow_upstream, label="Slow Service"),
    ]
    env = {
        "OPEN_BUTTON_TOKEN": TOKEN,
        "WEB_PASSWORD": PASSWORD,
        "VAST_CONTAINERLABEL": "C.7",
        "AUTH_EXCLUDE": str(excluded),
    }
    config = tmp / "Caddyfile"
    config.write_text(
        render_caddyfile(routes, auth=auth_from_env(env), admin="off", bind="127.0.0.1")
    )
    with ExitStack() as stack:
        stack.enter_context(upstream(echo_port))
        # What `vastinit caddyfile --run` puts in Caddy's environment for basic auth.
        caddy_env = {**env, **basic_credentials(env)}
        stack.enter_context(caddy(config, caddy_env, [authed, excluded, slow]))
        yield Edge(authed, excluded, slow, slow_upstream, config)


def test_request_without_credentials_is_refused(edge: Edge) -> None:
    reply = get(edge.authed, "/v1/models")
    assert reply.status == 401
    assert "Bearer" in reply.body and COOKIE in reply.body  # says how to get in


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKEN}",
        f"bearer {TOKEN}",
        f"BEARER {TOKEN}",
        f"bEaReR {TOKEN}",
        f"Bearer {PASSWORD}",
        f"BEARER {PASSWORD}",
    ],
)
def test_bearer_token_is_let_through_and_not_passed_on(edge: Edge, value: str) -> None:
    # RFC 7235: the scheme is case-insensitive. The upstream never sees the token.
    reply = get(edge.authed, "/v1/models", {"Authorization": value})
    assert reply.status == 200, reply.body
    assert reply.json()["path"] == "/v1/models"
    headers = reply.json()["headers"]
    assert isinstance(headers, dict)
    assert "Authorization" not in headers


def test_other_authorization_headers_pass_untouched(edge: Edge) -> None:
    headers = {"Cookie": f"{COOKIE}={TOKEN}", "Authorization": "Bearer upstream-key"}
    reply = get(edge.authed, "/v1/models", headers)
    assert reply.status == 200, reply.body
    upstream_headers = reply.json()["headers"]
    assert isinstance(upstream_headers, dict)
    assert upstream_headers["Authorization"] == "Bearer upstream-key"


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"xBearer {TOKEN}",
        f"Bearer  {TOKEN}",
        f"Bearer{TOKEN}",
        "Bearer ",
        TOKEN,
        f"Basic {TOKEN}",
        f"BEARER {TOKEN.upper()}",
    ],
)
def test_wrong_bearer_is_refused(edge: Edge, value: str) -> None:
    assert get(edge.authed, "/", {"Authorization": value}).status == 401


@pytest.mark.parametrize(
    "cookie", [f"{COOKIE}={TOKEN}", f"theme=dark; {COOKIE}={TOKEN}; x=1", f"{COOKIE}={PASSWORD}"]
)
def test_auth_cookie_is_let_through(edge: Edge, cookie: str) -> None:
    reply = get(edge.authed, "/tree", {"Cookie": cookie})
    assert reply.status == 200, reply.body
    assert reply.json()["path"] == "/tree"


@pytest.mark.parametrize(
    "cookie", [f"{COOKIE}=wrong", f"{COOKIE}=", f"C.8_auth_token={TOKEN}x", f"{COOKIE}={TOKEN[:5]}"]
)
def test_wrong_cookie_is_refused(edge: Edge, cookie: str) -> None:
    assert get(edge.authed, "/tree", {"Cookie": cookie}).status == 401


@pytest.mark.parametrize(
    "navigation",
    [{"Sec-Fetch-Mode": "navigate"}, {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}],
    ids=["sec-fetch-mode", "accept-html"],
)
def test_query_token_on_navigation_sets_cookie_and_redirects_without_it(
    edge: Edge, navigation: dict[str, str]
) -> None:
    reply = get(edge.authed, f"/lab/tree?a=1&token={TOKEN}&b=2", navigation)
    assert reply.status == 302
    assert reply.headers["Location"] == "/lab/tree?a=1&b=2"
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN};")
    assert "HttpOnly" in cookie and "Path=/" in cookie and "Max-Age=604800" in cookie
    # The browser follows with the cookie it was given and lands on the real page.
    followed = get(edge.authed, reply.headers["Location"], {"Cookie": cookie.split(";")[0]})
    assert followed.status == 200
    assert (followed.json()["path"], followed.json()["query"]) == ("/lab/tree", "a=1&b=2")


@pytest.mark.parametrize(
    ("target", "query"), [(f"/x?token={TOKEN}", ""), (f"/x?token={PASSWORD}&n=5", "n=5")]
)
def test_query_token_from_an_api_client_is_served_at_once_without_the_token(
    edge: Edge, target: str, query: str
) -> None:
    reply = get(edge.authed, target, {"Accept": "application/json"})
    assert reply.status == 200, reply.body
    assert reply.json()["query"] == query  # the upstream never sees the token
    assert reply.headers["Set-Cookie"].startswith(f"{COOKIE}=")


# Every token parameter goes, wherever it is, however it is encoded, however often it is
# repeated; the other parameters stay, in order, byte for byte. (Caddy's query matcher
# compares the first `token` value: that one must be the token.)
ENCODED = "".join(f"%{ord(c):02X}" for c in TOKEN)
STRIPPED = [
    (f"/x?token={TOKEN}&token=x", ""),
    (f"/x?token={TOKEN}&token={TOKEN}&token=", ""),
    (f"/x?a=1&token={TOKEN}&b=2", "a=1&b=2"),
    (f"/x?a=1&b=%41+b&token={TOKEN}", "a=1&b=%41+b"),
    (f"/x?token={ENCODED}", ""),
    (f"/x?token={ENCODED}&a=%2F&token=other", "a=%2F"),
    (f"/x?a=1&%74oken={TOKEN}&%74%6F%6b%65%6e=x&token&b=2", "a=1&b=2"),
    (f"/x?tokens=1&token={TOKEN}&xtoken=2&token=y&atoken", "tokens=1&xtoken=2&atoken"),
    (f"/x?token={PASSWORD}&n=5&token={TOKEN}", "n=5"),
    (
        "/x?" + "&".join([f"token={TOKEN}", *(f"t{i}=v&token=z" for i in range(7))]),
        "&".join(f"t{i}=v" for i in range(7)),
    ),
]


@pytest.mark.parametrize(("target", "query"), STRIPPED)
def test_every_token_parameter_is_stripped_before_proxying(
    edge: Edge, target: str, query: str
) -> None:
    reply = get(edge.authed, target, {"Accept": "application/json"})
    assert reply.status == 200, reply.body
    assert reply.json()["raw_query"] == query
    assert reply.json()["path"] == "/x"
    assert reply.headers["Set-Cookie"].split(";")[0] in (
        f"{COOKIE}={TOKEN}",
        f"{COOKIE}={PASSWORD}",
    )


@pytest.mark.parametrize(("target", "query"), STRIPPED)
def test_every_token_parameter_is_stripped_from_the_redirect(
    edge: Edge, target: str, query: str
) -> None:
    reply = get(edge.authed, target, {"Sec-Fetch-Mode": "navigate"})
    assert reply.status == 302, reply.body
    assert reply.headers["Location"] == (f"/x?{query}" if query else "/x")


def test_too_many_token_parameters_are_refused(edge: Edge) -> None:
    target = "/x?" + "&".join([f"token={TOKEN}"] * 9)
    reply = get(edge.authed, target, {"Accept": "application/json"})
    assert reply.status == 400
    assert TOKEN not in reply.body


@pytest.mark.parametrize(
    "target", ["/x?token=wrong", "/x?token=", f"/x?tok={TOKEN}", f"/x?token=x&token={TOKEN}"]
)
def test_wrong_query_token_is_refused(edge: Edge, target: str) -> None:
    reply = get(edge.authed, target, {"Sec-Fetch-Mode": "navigate"})
    assert reply.status == 401
    assert "Set-Cookie" not in reply.headers


def test_auth_excluded_port_needs_no_token(edge: Edge) -> None:
    reply = get(edge.excluded, "/open?q=1")
    assert reply.status == 200
    assert (reply.json()["path"], reply.json()["query"]) == ("/open", "q=1")


@pytest.mark.parametrize("path", ["/portal-resolver", "/manifest.json"])
def test_portal_resolver_and_well_known_files_need_no_token(edge: Edge, path: str) -> None:
    reply = get(edge.authed, path)
    assert reply.status == 200
    if path == "/portal-resolver":
        assert reply.body == "ok" and reply.headers["Access-Control-Allow-Origin"] == "*"


def test_loading_page_until_the_upstream_answers_then_the_real_page(edge: Edge) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    browser = {**auth, "Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    page = get(edge.slow, "/", browser)
    assert page.status == 200  # ADR 0017: the interstitial is not a 5xx
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["X-Portal-Placeholder"] == "true"
    assert page.headers["Cache-Control"] == "no-store"
    assert "Slow Service is starting" in page.body
    assert '<meta http-equiv="refresh" content="5">' in page.body
    api = get(edge.slow, "/v1/models", auth)
    assert api.status == 503 and api.headers["Retry-After"] == "5"
    assert get(edge.slow, "/").status == 401  # auth comes before the loading page
    with upstream(edge.slow_upstream):
        real = get(edge.slow, "/", browser)
        assert real.status == 200
        assert real.json()["path"] == "/"
        assert "X-Portal-Placeholder" not in real.headers


def test_token_is_not_in_the_generated_file(edge: Edge) -> None:
    text = edge.config.read_text()
    assert TOKEN not in text and PASSWORD not in text
    assert "{env.OPEN_BUTTON_TOKEN}" in text


def test_caddy_without_the_token_in_its_environment_refuses_everything(tmp_path: Path) -> None:
    port, echo_port = free_port(), free_port()
    config = tmp_path / "Caddyfile"
    config.write_text(
        render_caddyfile(
            [Route(port, echo_port, label="Echo")],
            auth=auth_from_env({}),
            admin="off",
            bind="127.0.0.1",
        )
    )
    with upstream(echo_port), caddy(config, {}, [port]):
        for headers in ({}, {"Authorization": "Bearer "}, {"Cookie": "vastinit_auth_token="}):
            reply = get(port, "/", headers)
            assert reply.status == 503, headers
            assert "OPEN_BUTTON_TOKEN" in reply.body
        assert get(port, "/?token=").status == 503


def test_caddyfile_run_generates_a_private_token_and_serves_with_it(tmp_path: Path) -> None:
    port, echo_port = free_port(), free_port()
    (tmp_path / "units").mkdir()
    token_file = tmp_path / "state" / "caddy_token"
    config = tmp_path / "Caddyfile"
    env = {
        "PORTAL_CONFIG": f"127.0.0.1:{port}:{echo_port}:/:Echo",
        "CADDY_BIND": "127.0.0.1",
        "CADDY_ADMIN": "off",
        "CADDY_BIN": str(CADDY),
        "VASTINIT_UNITS": str(tmp_path / "units"),
        "VASTINIT_TOKEN_FILE": str(token_file),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    command = [sys.executable, "-m", "vastinit", "caddyfile", "--output", str(config), "--run"]
    with upstream(echo_port), caddy(config, env, [port], command):
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert get(port, "/").status == 401
        assert get(port, "/", {"Authorization": f"Bearer {token}"}).status == 200
        assert token not in config.read_text()
    assert token not in (tmp_path / "caddy.log").read_text()


def _basic(user: str, password: str, scheme: str = "Basic") -> str:
    return f"{scheme} " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "value",
    [
        _basic("vastai", TOKEN),
        _basic("vastai", TOKEN, "basic"),
        _basic("vastai", TOKEN, "BASIC"),
        _basic("vastai", PASSWORD),
    ],
)
def test_basic_auth_with_user_vastai_and_the_token_is_let_through_and_not_passed_on(
    edge: Edge, value: str
) -> None:
    """The previous image's third way in: `curl -u vastai:TOKEN`."""
    reply = get(edge.authed, "/v1/models", {"Authorization": value})
    assert reply.status == 200, reply.body
    headers = reply.json()["headers"]
    assert isinstance(headers, dict) and "Authorization" not in headers


@pytest.mark.parametrize(
    "value",
    [
        _basic("vastai", "wrong"),
        _basic("root", TOKEN),
        _basic("vastai", TOKEN) + "x",
        "Basic ",
        "Basic",
        _basic("vastai", ""),
    ],
)
def test_basic_auth_with_anything_else_is_refused(edge: Edge, value: str) -> None:
    assert get(edge.authed, "/v1/models", {"Authorization": value}).status == 401


def test_a_browser_is_offered_basic_auth_an_api_client_only_bearer(edge: Edge) -> None:
    browser = get(edge.authed, "/", {"Accept": "text/html"})
    api = get(edge.authed, "/v1/models")
    assert browser.status == api.status == 401
    assert browser.headers.get_all("WWW-Authenticate") == ["Bearer", 'Basic realm="vastinit"']
    assert api.headers.get_all("WWW-Authenticate") == ["Bearer"]
    # A browser that is let in gets no challenge at all.
    for credential in ({"Authorization": f"Bearer {TOKEN}"}, {"Cookie": f"{COOKIE}={TOKEN}"}):
        allowed = get(edge.authed, "/", {"Accept": "text/html", **credential})
        assert allowed.status == 200 and allowed.headers.get_all("WWW-Authenticate") is None


def test_curl_dash_u_gets_in(edge: Edge) -> None:
    done = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            f"vastai:{TOKEN}",
            f"http://127.0.0.1:{edge.authed}/v1/models",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout == "200", done
