"""PORTAL_CONFIG parsing, merging with units' [[expose]], and which routes get a Caddy site."""

from __future__ import annotations

import pytest

from vastinit.model import Expose
from vastinit.stack.common import StackError
from vastinit.stack.routes import (
    DEFAULT_PORTAL_CONFIG,
    Route,
    UnitPorts,
    default_portal_config,
    merge_routes,
    parse_portal_config,
    probe_port,
    route_units,
    routes_from_expose,
    site_plan,
)


def _summary(routes: list[Route]) -> list[tuple[str, int, int, str, str]]:
    return [(r.host, r.port, r.target, r.path, r.label) for r in routes]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        (
            "localhost:8000:18000:/docs:SGLang API",
            [("localhost", 8000, 18000, "/docs", "SGLang API")],
        ),
        (  # only the label may hold ":"
            "localhost:8000:18000:/:API: v1: beta",
            [("localhost", 8000, 18000, "/", "API: v1: beta")],
        ),
        ("127.0.0.1:1111:11111::Portal", [("127.0.0.1", 1111, 11111, "/", "Portal")]),
        (  # spaces around entries and fields, empty entries
            " localhost:8000:18000:/:A | |localhost : 9000 : 19000 : /x : B |",
            [("localhost", 8000, 18000, "/", "A"), ("localhost", 9000, 19000, "/x", "B")],
        ),
        (  # the same label twice: the later entry replaces the earlier one, as before
            "localhost:8000:18000:/:API|localhost:8001:18001:/:API",
            [("localhost", 8001, 18001, "/", "API")],
        ),
        (  # equal ports: an alias, kept for the portal
            "localhost:8080:8080:/terminals/1:Jupyter Terminal",
            [("localhost", 8080, 8080, "/terminals/1", "Jupyter Terminal")],
        ),
        ("my-host.internal:1:65535:/:Edge", [("my-host.internal", 1, 65535, "/", "Edge")]),
    ],
)
def test_portal_config_parses(text: str, expected: list[tuple[str, int, int, str, str]]) -> None:
    assert _summary(parse_portal_config(text)) == expected


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("localhost:8000:18000:/docs", "expected 5 fields"),
        ("localhost:8000", "expected 5 fields"),
        ("justtext", "expected 5 fields"),
        ("localhost:80x0:18000:/:API", "external port '80x0'"),
        ("localhost:8000:-1:/:API", "internal port '-1'"),
        ("localhost:0:18000:/:API", "external port '0'"),
        ("localhost:8000:70000:/:API", "internal port '70000'"),
        ("localhost::18000:/:API", "external port ''"),
        (":8000:18000:/:API", "host ''"),
        ("bad host:8000:18000:/:API", "host 'bad host'"),
        ("h{x}:8000:18000:/:API", "host 'h{x}'"),
        ("http://x:8000:18000:/:API", "external port '//x'"),  # a URL is not a host
    ],
)
def test_bad_portal_config_entry_is_named_in_the_error(entry: str, reason: str) -> None:
    text = f"localhost:8000:18000:/:Fine|{entry}"
    with pytest.raises(StackError) as caught:
        parse_portal_config(text)
    message = str(caught.value)
    assert f"PORTAL_CONFIG entry {entry!r}" in message
    assert reason in message
    assert "Fine" not in message  # only the bad entry is blamed


def test_every_bad_entry_is_reported_at_once() -> None:
    with pytest.raises(StackError) as caught:
        parse_portal_config("a:1:2|localhost:8000:18000:/:OK|b:x:2:/:B")
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert "'a:1:2'" in lines[0] and "'b:x:2:/:B'" in lines[1]


def test_default_portal_config_serves_sglang_and_jupyter() -> None:
    routes = parse_portal_config(DEFAULT_PORTAL_CONFIG)
    served, skipped = site_plan(routes, {})
    assert [(r.port, r.target) for r in served] == [(8000, 18000), (8080, 18080)]
    assert [r.label for r, _ in skipped] == ["Jupyter Terminal"]


@pytest.mark.parametrize(
    ("env", "sglang_target"),
    [({}, 18000), ({"SGLANG_SERVER_PORT": ""}, 18000), ({"SGLANG_SERVER_PORT": "30001"}, 30001)],
)
def test_default_sglang_route_follows_the_sglang_port_setting(
    env: dict[str, str], sglang_target: int
) -> None:
    """One port setting: the launcher, the sglang unit's probes and this route follow it."""
    routes = parse_portal_config(default_portal_config(env))
    served, _ = site_plan(routes, {})
    assert [(r.port, r.target) for r in served] == [(8000, sglang_target), (8080, 18080)]


@pytest.mark.parametrize("bad", ["abc", "0", "70000", "18000x"])
def test_bad_sglang_port_setting_is_named(bad: str) -> None:
    with pytest.raises(StackError, match="SGLANG_SERVER_PORT"):
        default_portal_config({"SGLANG_SERVER_PORT": bad})


def test_exposed_route_goes_to_loopback_with_the_unit_name_as_default_label() -> None:
    [route] = routes_from_expose([("web", Expose(port=9000, target=19000, auth=False))])
    assert (route.host, route.port, route.target, route.label, route.auth) == (
        "127.0.0.1",
        9000,
        19000,
        "web",
        False,
    )
    assert route.source == "unit web"


def test_portal_config_wins_over_an_expose_of_the_same_port() -> None:
    portal = parse_portal_config("localhost:8000:18000:/docs:SGLang API")
    exposed = routes_from_expose(
        [("other", Expose(port=8000, target=18005)), ("web", Expose(port=9000, target=19000))]
    )
    routes, notes = merge_routes(portal, exposed)
    assert [(r.port, r.target, r.source) for r in routes] == [
        (8000, 18000, "PORTAL_CONFIG entry 'localhost:8000:18000:/docs:SGLang API'"),
        (9000, 19000, "unit web"),
    ]
    assert len(notes) == 1 and "unit other" in notes[0] and "18005" in notes[0]


def test_an_expose_equal_to_a_portal_entry_merges_silently() -> None:
    portal = parse_portal_config("127.0.0.1:8000:18000:/docs:SGLang API")
    routes, notes = merge_routes(portal, routes_from_expose([("sglang", Expose(8000, 18000))]))
    assert len(routes) == 1 and notes == []


def test_two_portal_entries_serving_one_port_differently_is_an_error() -> None:
    portal = parse_portal_config("localhost:8000:18000:/:A|localhost:8000:18001:/:B")
    with pytest.raises(StackError, match="both serve external port 8000"):
        merge_routes(portal, [])


ROUTES = parse_portal_config(
    "localhost:8000:18000:/docs:API|localhost:8080:18080:/:Jupyter"
    "|localhost:8080:8080:/terminals/1:Terminal|localhost:1111:11111:/:Portal"
)


@pytest.mark.parametrize(
    ("env", "jupyter_launch", "served_ports"),
    [
        ({}, False, [8000, 8080, 1111]),  # off Vast: everything, on its external port
        ({"VAST_TCP_PORT_8000": "40001"}, False, [8000]),  # on Vast: only mapped ports
        ({"VAST_TCP_PORT_8000": "1", "VAST_TCP_PORT_8080": "2"}, False, [8000, 8080]),
        ({}, True, [8000, 1111]),  # Vast's own Jupyter holds 8080
    ],
)
def test_site_plan(env: dict[str, str], jupyter_launch: bool, served_ports: list[int]) -> None:
    served, skipped = site_plan(ROUTES, env, jupyter_launch=jupyter_launch)
    assert [r.port for r in served] == served_ports
    assert all(reason for _, reason in skipped)
    assert len(served) + len(skipped) == len(ROUTES)


def test_exposed_route_says_whether_its_upstream_shares_the_token() -> None:
    routes = routes_from_expose(
        [
            ("app", Expose(port=9000, target=19000, pass_credentials=True)),
            ("web", Expose(port=9001, target=19001)),
        ]
    )
    assert [r.pass_credentials for r in routes] == [True, False]
    assert not Route(8000, 18000).pass_credentials  # PORTAL_CONFIG entries never share


@pytest.mark.parametrize(
    ("target", "port"),
    [
        ("http://127.0.0.1:18000/health", 18000),
        ("http://localhost:8080", 8080),
        ("127.0.0.1:9000", 9000),
        ("http://10.0.0.2:18000/health", None),
        ("http://127.0.0.1:${PORT}/health", None),
        ("http://127.0.0.1:99999/", None),
    ],
)
def test_probe_port_is_a_loopback_port_only(target: str, port: int | None) -> None:
    assert probe_port(target) == port


def test_route_units_by_expose_then_target_then_probe() -> None:
    portal = parse_portal_config(
        "localhost:8000:18000:/docs:SGLang API|localhost:8080:18080:/:Jupyter"
        "|localhost:7860:17860:/:Model UI|10.0.0.9:9000:19000:/:Elsewhere"
    )
    web = Expose(port=9100, target=19100, label="Web")
    units = [
        UnitPorts("sglang", (), frozenset({18000})),
        UnitPorts("web", (web,)),
        UnitPorts("lab", (Expose(port=8081, target=18080),)),
    ]
    routes, _ = merge_routes(portal, routes_from_expose([("web", web)]))
    assert route_units(routes, units) == {
        8000: "sglang",  # its probe checks 18000
        8080: "lab",  # a unit exposes 18080 (on another port)
        7860: None,  # nothing serves 17860
        9000: None,  # not on loopback
        9100: "web",  # its own [[expose]]
    }
