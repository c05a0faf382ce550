"""The portal's quick-tunnel template: only a strictly local URL reaches cloudflared's
command, and the unit it builds passes the transient pipeline (issue 22)."""

from __future__ import annotations

import pytest

from vastinit.config import load_transient
from vastinit.stack.tunnels import TunnelURLError, check_local_url, tunnel_unit


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("http://127.0.0.1:8080", "tunnel-http-8080"),
        ("https://localhost:8443/", "tunnel-https-8443"),
        ("http://[::1]:1/lab/tree", "tunnel-http-1"),
        ("http://localhost:65535/a-b_c.d~e/", "tunnel-http-65535"),
    ],
)
def test_a_local_url_makes_a_cloudflared_unit(url: str, name: str) -> None:
    got_name, text = tunnel_unit(url)
    assert got_name == name
    unit = load_transient(got_name, text, {})
    assert unit.transient
    assert unit.command == ("cloudflared", "tunnel", "--no-autoupdate", "--url", url)
    assert unit.user is None and not unit.restart.essential and unit.expose == ()
    assert unit.readiness is not None


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://127.0.0.1",  # no port
        "http://127.0.0.1:",
        "http://127.0.0.1:0",
        "http://127.0.0.1:08080",
        "http://127.0.0.1:65536",
        "http://127.0.0.1:123456",
        "ftp://127.0.0.1:21",
        "HTTP://127.0.0.1:80",
        "file:///etc/passwd",
        "http://10.0.0.1:80",  # not local
        "http://example.com:80",
        "http://127.0.0.2:80",
        "http://0.0.0.0:80",
        "http://::1:80",  # IPv6 without brackets
        "http://localhost.evil.com:80",
        "http://user:pw@127.0.0.1:80",  # credentials
        "http://127.0.0.1@evil.com:80",
        "http://127.0.0.1:80?x=1",  # query
        "http://127.0.0.1:80/#frag",
        "http://127.0.0.1:80/a b",  # a space: a second argument
        "http://127.0.0.1:80/${HOME}",  # expansion
        "http://127.0.0.1:80/$(id)",
        "http://127.0.0.1:80/;rm -rf /",
        "http://127.0.0.1:80/'\"",
        "http://127.0.0.1:80/\n--url http://evil",
        "http://127.0.0.1:80/\x00",
        "http://127.0.0.1:80/%2e%2e",
        " http://127.0.0.1:80",
        "http://127.0.0.1:80 ",
        "http://127.0.0.1:80/" + "a" * 300,
        "http://127.0.0.1:８０",  # non-ASCII digits
    ],
)
def test_anything_else_is_refused(url: str) -> None:
    with pytest.raises(TunnelURLError):
        tunnel_unit(url)


def test_check_local_url_returns_scheme_and_port() -> None:
    assert check_local_url("https://[::1]:443/x") == ("https", 443)


def test_a_non_string_is_refused() -> None:
    with pytest.raises(TunnelURLError):
        check_local_url(8080)  # type: ignore[arg-type]
