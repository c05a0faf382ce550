"""``vastinit caddyfile``: the Caddyfile of the public edge, for Caddy 2.6 (Debian's).

One site per served route, ``http://:PORT`` (``https://`` with ``ENABLE_HTTPS``), proxying
to the route's internal port behind token auth (docs/stack.md "Auth"). The token is never
in the file: Caddy reads ``{env.OPEN_BUTTON_TOKEN}`` (and ``{env.WEB_PASSWORD}`` when both
differ) at request time, and every authed site refuses to serve while it is empty.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from vastinit.config.expand import expand
from vastinit.model import Expose, ProbeKind, Unit
from vastinit.stack.caddy_token import check_token, default_token_file, ensure_token
from vastinit.stack.certs import cert_paths, ensure_certificate, send_status
from vastinit.stack.common import StackError, configure_cli_logging, env_flag
from vastinit.stack.portal_yaml import applications
from vastinit.stack.routes import (
    Route,
    UnitPorts,
    merge_routes,
    probe_port,
    route_units,
    routes_from_expose,
    site_plan,
)

__all__ = [
    "AuthSettings",
    "EdgeGate",
    "EdgePlan",
    "Route",
    "TlsFiles",
    "auth_from_env",
    "ensure_token",
    "main",
    "render_caddyfile",
]

log = structlog.get_logger("vastinit.stack.caddy")

# Caddy's admin API can rewrite the whole edge, auth included: never on a TCP port. Under
# vastinit it listens on a unix socket in the edge directory (EdgeGate), else it is off.
DEFAULT_ADMIN = "off"
DEFAULT_COOKIE_LABEL = "vastinit"  # the cookie's prefix when VAST_CONTAINERLABEL is unset
COOKIE_MAX_AGE = 604800  # a week, as before
LOADING_REFRESH_S = 5  # the loading page without vastinit's status stream (standalone)
# Streamed answers reach the client within 10 ms. Not -1 ("at once"): Caddy 2.6 cuts every
# proxied request in flight when a new configuration is loaded (a reload adding a route)
# if flush_interval is -1, and none with a positive interval.
DEFAULT_FLUSH_INTERVAL = "10ms"
RETRY_AFTER_S = 1  # a route whose unit is not ready yet, under vastinit
# Served by vastinit (the edge's status socket) on every route with a unit behind it, after
# the auth check: the loading page's live status, as server-sent events. Read-only.
STATUS_PATH = "/.vastinit/status"
# Proxied without auth, as before: well-known files browsers and tools fetch on their own.
PUBLIC_PATHS = (
    "/.well-known/acme-challenge/*",
    "/.well-known/change-password",
    "/.well-known/security.txt",
    "/security.txt",
    "/manifest.json",
    "/manifest.webmanifest",
    "/site.webmanifest",
)

_COOKIE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_GO_DURATION = re.compile(r"-1|0|(\d+(\.\d+)?(ns|us|ms|s|m|h))+")
_ADMIN = re.compile(r"off|unix//[^\s{}\"`]+|[A-Za-z0-9.\[\]:-]*:\d+")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/@+-]+")
_UNIT = re.compile(r"[A-Za-z0-9_.@-]+")


@dataclass(frozen=True)
class AuthSettings:
    """Who may pass the edge: the token variables Caddy reads, and where auth is off."""

    enabled: bool = True
    exclude_ports: frozenset[int] = frozenset()
    cookie_name: str = f"{DEFAULT_COOKIE_LABEL}_auth_token"
    token_vars: tuple[str, ...] = ("OPEN_BUTTON_TOKEN",)

    def applies_to(self, route: Route) -> bool:
        """Whether ``route``'s site asks for the token."""
        return self.enabled and route.auth and route.port not in self.exclude_ports


@dataclass(frozen=True)
class EdgeGate:
    """How the edge follows the units under vastinit: a route with a unit behind it proxies
    only while ``DIR/ready/UNIT`` exists (vastinit keeps it while the unit is ready; Caddy's
    ``file`` matcher checks it per request, a stat), and shows the loading page otherwise.

    ``DIR/status.sock`` is vastinit's read-only status projection (the loading page and its
    server-sent events); ``DIR/admin.sock`` Caddy's admin API (DIR is 0700).
    """

    dir: str
    units: Mapping[int, str | None]  # external port -> the unit behind that route, or None

    @property
    def ready_dir(self) -> str:
        return f"{self.dir}/ready"

    @property
    def status_socket(self) -> str:
        return f"{self.dir}/status.sock"

    @property
    def admin_socket(self) -> str:
        return f"{self.dir}/admin.sock"


@dataclass(frozen=True)
class TlsFiles:
    """The certificate and key every site serves when HTTPS is on."""

    cert: str
    key: str


def cookie_name(env: Mapping[str, str]) -> str:
    """``${VAST_CONTAINERLABEL}_auth_token``; label ``vastinit`` when unset; unsafe chars -> _."""
    label = env.get("VAST_CONTAINERLABEL", "").strip() or DEFAULT_COOKIE_LABEL
    return f"{_COOKIE_UNSAFE.sub('_', label)}_auth_token"


def auth_from_env(env: Mapping[str, str]) -> AuthSettings:
    """ENABLE_AUTH, AUTH_EXCLUDE, VAST_CONTAINERLABEL and which token variables to accept."""
    exclude: set[int] = set()
    for item in env.get("AUTH_EXCLUDE", "").split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise StackError(f"AUTH_EXCLUDE: {item!r} is not a port number (want e.g. 8000,8080)")
        exclude.add(int(item))
    button = env.get("OPEN_BUTTON_TOKEN", "").strip()
    password = env.get("WEB_PASSWORD", "").strip()
    # Both set and different: either one opens the door, as in the previous image.
    both = bool(button and password and button != password)
    return AuthSettings(
        enabled=env_flag(env, "ENABLE_AUTH", True),
        exclude_ports=frozenset(exclude),
        cookie_name=cookie_name(env),
        token_vars=("OPEN_BUTTON_TOKEN", "WEB_PASSWORD") if both else ("OPEN_BUTTON_TOKEN",),
    )


def tls_from_env(env: Mapping[str, str]) -> TlsFiles | None:
    """The instance certificate's paths when ``ENABLE_HTTPS`` is true, else None.

    Never a fallback to plain HTTP: ``--run`` makes sure the pair is usable first
    (vastinit.stack.certs), and fails the start when it cannot.
    """
    if not env_flag(env, "ENABLE_HTTPS", False):
        return None
    cert, key = cert_paths(env)
    return TlsFiles(str(cert), str(key))


def render_caddyfile(
    routes: Iterable[Route],
    *,
    auth: AuthSettings,
    admin: str = DEFAULT_ADMIN,
    bind: str | None = None,
    tls: TlsFiles | None = None,
    flush_interval: str = "10ms",
    gate: EdgeGate | None = None,
) -> str:
    """The Caddyfile serving ``routes`` (aliases skipped); StackError on an unsafe setting.

    With ``gate`` (under vastinit) a route with a unit behind it follows that unit's
    readiness, and one without says that nothing serves it; without, every route shows the
    loading page while its upstream refuses connections.
    """
    _check(admin, _ADMIN, "the Caddy admin address (CADDY_ADMIN)")
    _check(flush_interval, _GO_DURATION, "CADDY_FLUSH_INTERVAL (-1 or a duration like 100ms)")
    if bind is not None:
        _check(bind, re.compile(r"[A-Za-z0-9.:\[\]-]+"), "the bind address")
    if tls is not None:
        _check(tls.cert, re.compile(r"[^\s{}\"`]+"), "the TLS certificate path")
        _check(tls.key, re.compile(r"[^\s{}\"`]+"), "the TLS key path")
    for name in auth.token_vars:
        _check(name, _VAR, "a token variable name")
    _check(auth.cookie_name, re.compile(r"[A-Za-z0-9._-]+"), "the cookie name")
    if gate is not None:
        _check(gate.dir, _SAFE_PATH, "the edge directory (VASTINIT_EDGE_DIR)")
        for unit in gate.units.values():
            if unit is not None:
                _check(unit, _UNIT, "a unit name")
    lines = [
        "# Generated by `vastinit caddyfile` from PORTAL_CONFIG and the units' [[expose]].",
        "# Rewritten at every start of the caddy unit: edit those instead. The auth token is",
        "# not in this file; Caddy reads it from its environment at request time.",
        "{",
        f"\tadmin {admin}",
        "\tauto_https off",
    ]
    if tls is not None:
        # Plain HTTP on an HTTPS port gets a redirect instead of a TLS handshake error.
        lines += ["\tservers {", "\t\tlistener_wrappers {", "\t\t\thttp_redirect", "\t\t\ttls"]
        lines += ["\t\t}", "\t}"]
    lines.append("}")
    for route in routes:
        if route.is_alias:
            continue
        lines.append("")
        lines += _site(route, auth, bind, tls, flush_interval, gate)
    return "\n".join(lines) + "\n"


def _check(value: str, pattern: re.Pattern[str], what: str) -> None:
    if not pattern.fullmatch(value):
        raise StackError(f"{what}: {value!r} is not allowed here")


def _site(
    route: Route,
    auth: AuthSettings,
    bind: str | None,
    tls: TlsFiles | None,
    flush: str,
    gate: EdgeGate | None,
) -> list[str]:
    scheme = "https" if tls else "http"
    authed = auth.applies_to(route)
    lines = [
        f"# {_comment(route.label)}: port {route.port} -> {route.host}:{route.target}"
        f" ({_comment(route.source) or 'route'}; auth {'on' if authed else 'off'}"
        f"{'; credentials passed on' if route.pass_credentials else ''})",
        f"{scheme}://:{route.port} {{",
    ]
    if bind:
        lines.append(f"\tbind {bind}")
    if tls:
        lines.append(f"\ttls {tls.cert} {tls.key}")
    lines.append("\troute {")
    body = [
        "# The portal checks that a port answers with this, without credentials.",
        "@portal_resolver path /portal-resolver",
        "header @portal_resolver Access-Control-Allow-Origin *",
        'respond @portal_resolver "ok" 200',
    ]
    if authed:
        body += _auth(route, auth)
    if not route.pass_credentials:
        body += _strip_credentials(auth, authed)
    unit = gate.units.get(route.port) if gate is not None else None
    if gate is not None and unit is not None:
        body += _gated(route, gate, unit)
    body += _proxy(route, flush)
    lines += _indent(body, 2)
    lines.append("\t}")
    if gate is None:
        lines += _indent(_loading(route), 1)
    elif unit is None:
        lines += _indent(_no_unit(route), 1)
    else:
        lines += _indent(_errors_gated(route, gate), 1)
    lines.append("}")
    return lines


def _gated(route: Route, gate: EdgeGate, unit: str) -> list[str]:
    return [
        f"# The loading page's live status: vastinit's read-only projection of {unit}.",
        f"@vastinit_status path {STATUS_PATH}",
        "route @vastinit_status {",
        f"\trewrite * /v1/route/{route.port}/events",
        f"\treverse_proxy unix/{gate.status_socket} {{",
        f"\t\tflush_interval {DEFAULT_FLUSH_INTERVAL}",
        "\t}",
        "}",
        f"# Proxied only while {unit} is ready: vastinit keeps {gate.ready_dir}/{unit} then.",
        "@vastinit_unready {",
        "\tnot file {",
        f"\t\troot {gate.ready_dir}",
        f"\t\ttry_files /{unit}",
        "\t}",
        "}",
        "route @vastinit_unready {",
        *_indent(_unready(route, gate), 1),
        "}",
    ]


def _unready(route: Route, gate: EdgeGate) -> list[str]:
    # Browsers get vastinit's loading page (status 200, ADR 0017: no proxy in front swaps it
    # for its own error page); other clients an honest 503 with a short Retry-After.
    text = f"{_plain(route.label or f'port {route.port}')} is not ready yet; retry shortly"
    return [
        f"@browser expression `{_BROWSER}`",
        "route @browser {",
        f"\trewrite * /v1/route/{route.port}/page",
        f"\treverse_proxy unix/{gate.status_socket}",
        "}",
        "header Cache-Control no-store",
        "header X-Portal-Placeholder true",
        f"header Retry-After {RETRY_AFTER_S}",
        f'respond "{text}" 503',
    ]


def _errors_gated(route: Route, gate: EdgeGate) -> list[str]:
    # The unit is ready but its port refused (it just died, before vastinit saw it).
    return [
        "handle_errors {",
        "\t@starting expression `{err.status_code} in [502, 503, 504]`",
        "\troute @starting {",
        *_indent(_unready(route, gate), 2),
        "\t}",
        "}",
    ]


def _no_unit(route: Route) -> list[str]:
    # No unit of this container serves the route's target: say so, instead of "starting".
    name = _html(route.label or f"port {route.port}")
    target = f"{route.host}:{route.target}"
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{name}: nothing serves this port</title></head>"
        '<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 4em auto; '
        'padding: 0 1em; color: #222">'
        f"<h1>{name}: nothing serves this port</h1>"
        f"<p>No service of this container runs behind it ({_html(target)} refuses "
        "connections), and none is going to start by itself.</p>"
        "<p>Start your application on that port, or remove this entry from PORTAL_CONFIG "
        "(or /etc/portal.yaml).</p></body></html>"
    )
    text = f"{_plain(route.label or f'port {route.port}')}: nothing serves this port"
    return [
        "handle_errors {",
        "\t@nothing expression `{err.status_code} in [502, 503, 504]`",
        "\troute @nothing {",
        "\t\theader Cache-Control no-store",
        "\t\theader X-Portal-Placeholder true",
        f"\t\t@browser expression `{_BROWSER}`",
        '\t\theader @browser Content-Type "text/html; charset=utf-8"',
        f"\t\trespond @browser `{page}` 200",
        f'\t\trespond "{text}" 502',
        "\t}",
        "}",
    ]


_BROWSER = (
    '{http.request.header.Sec-Fetch-Mode} == "navigate" || '
    '{http.request.header.Accept}.contains("text/html")'
)


def _auth(route: Route, auth: AuthSettings) -> list[str]:
    tokens = [f"{{env.{name}}}" for name in auth.token_vars]
    empty = " || ".join(f'{t} == ""' for t in tokens)
    cookie = auth.cookie_name
    names = " or ".join(auth.token_vars)
    lines = [
        "# Never let an empty token match an empty credential.",
        f"@no_token expression `{empty}`",
        f"respond @no_token \"vastinit: the auth token ({names}) is empty in Caddy's "
        'environment; start Caddy with `vastinit caddyfile --run`" 503',
        "# ?token=TOKEN: remember it in the cookie; a browser navigation is redirected to",
        "# the URL without it, any other client is served at once.",
        f"@token_query query {' '.join(f'token={t}' for t in tokens)}",
        *_strip_bearer(tokens, strip=not route.pass_credentials),
        *_basic(auth.token_vars, strip=not route.pass_credentials),
        "route @token_query {",
        # {query.token} is every value, comma-joined; the first one is the token that matched.
        "\tmap {query.token} {vastinit_first_token} {",
        '\t\t~^([^,]*) "$1"',
        "\t}",
        "\tvars vastinit_token {vastinit_first_token}",
        "\tvars vastinit_by_query yes",
        f'\theader Set-Cookie "{cookie}={{vars.vastinit_token}}; Path=/; '
        f'Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax"',
        '\t@navigation expression `{http.request.header.Sec-Fetch-Mode} == "navigate" || '
        '{http.request.header.Accept}.contains("text/html")`',
        "\troute @navigation {",
        *_indent(_strip_token_params("_navigation"), 2),
        "\t\tredir {uri} 302",
        "\t}",
        "}",
        "# Otherwise the cookie or a Bearer header, or a public well-known path; else 401.",
        "@denied {",
        f"\tnot path {' '.join(PUBLIC_PATHS)}",
        # One value per line: Caddy 2.6's header matcher takes one; the lines are AND-ed nots.
        *(f"\tnot header Cookie *{cookie}={t}*" for t in tokens),
        "\tnot vars vastinit_bearer yes",
        "\tnot vars vastinit_basic yes",
        "\tnot vars vastinit_by_query yes",
        "}",
        'header @denied WWW-Authenticate "Bearer"',
        # A browser is also offered basic auth (user WEB_USERNAME, default vastai; the token
        # as password), as the previous image did. The denial is remembered, not re-derived.
        "vars @denied vastinit_denied yes",
        "@denied_browser {",
        "\tvars vastinit_denied yes",
        '\texpression `{http.request.header.Accept}.contains("text/html")`',
        "}",
        'header @denied_browser +WWW-Authenticate "Basic realm=\\"vastinit\\""',
        'respond @denied "401 Unauthorized: send Authorization: Bearer TOKEN, the '
        f'{cookie} cookie, or open this page once with ?token=TOKEN" 401',
    ]
    return lines


def _strip_credentials(auth: AuthSettings, authed: bool) -> list[str]:
    """The edge's own credentials, removed before proxying (the Bearer header: _strip_bearer).

    The auth cookie goes on every site, auth on or off: a browser sends a host's cookies to
    all of its ports. ``token`` query parameters go where the edge checks the token.
    """
    lines = [
        "# Credentials stop at the edge: the upstream does not see the auth cookie",
        *_strip_cookie(auth.cookie_name),
    ]
    if authed:
        lines += [
            "# ... nor any `token` query parameter, whatever its value.",
            f"@token_param expression `{HAS_TOKEN_PARAM}`",
            "route @token_param {",
            *_indent(_strip_token_params(""), 1),
            "}",
        ]
    return lines


def _strip_cookie(name: str) -> list[str]:
    # Caddy 2.6's header replacement is a regex over each Cookie value. The first pass
    # removes every `; NAME=...` after another cookie (with its separator), the second a
    # leading `NAME=...; `; the user's other cookies stay byte for byte and in order.
    # (A replacement must not be empty in the Caddyfile: `$1` is the empty last group.)
    # A Cookie header left empty (the auth cookie was the only one) is dropped.
    pattern = name.replace(".", "[.]")
    return [
        f"request_header Cookie `;[ \\t]*{pattern}=[^;]*()` $1",
        f"request_header Cookie `^[ \\t]*{pattern}=[^;]*;?[ \\t]*()` $1",
        '@cookie_empty expression `{http.request.header.Cookie}.matches("^[ \\t;]*$")`',
        "request_header @cookie_empty -Cookie",
    ]


# A `token` query parameter, its name in any percent-encoding (Go decodes the name as well
# as the value: `%74oken=...` is `token` to Caddy's query matcher), with or without a value.
# Parameters are separated by `&` or by `;`: Go drops a pair with a `;` in it (so Caddy's
# query matcher does not see it), but some upstreams split on `;` and would read the token.
_TOKEN_NAME = "(?:t|%74)(?:o|%6[fF])(?:k|%6[bB])(?:e|%65)(?:n|%6[eE])"
_TOKEN_PARAM = f"{_TOKEN_NAME}(?:=[^&;]*)?"
# The whole query string, split around its first token parameter: ${1} is what follows it
# when it comes first; otherwise ${2} precedes it (without its separator) and ${3} follows.
TOKEN_PARAM_REGEX = f"^(?:{_TOKEN_PARAM}(?:[&;](.*))?|(.*?)[&;]{_TOKEN_PARAM}([&;].*)?)$"
# Whether the query string has a token parameter at all (the raw string: see above).
HAS_TOKEN_PARAM = f'{{query}}.matches("(?:^|[&;]){_TOKEN_PARAM}(?:[&;]|$)")'
MAX_TOKEN_PARAMS = 8  # removed one per pass; a request with more gets 400


def _strip_token_params(suffix: str) -> list[str]:
    # Caddy 2.6 has no `uri query -token` (2.7 does): each `uri replace` swaps the whole
    # query string (the map's ${0}) for the same string without its first token parameter,
    # so a token parameter anywhere, in any encoding, repeated, is removed and every other
    # parameter kept byte for byte and in order. The map is evaluated at each use, on the
    # query string as the previous pass left it; with no token parameter left it yields ""
    # and the replace changes nothing. (Any `uri replace` also cleans the path: `//` and
    # `..` segments are resolved, as Caddy's own matchers see it; so this runs only on a
    # request with a token parameter.)
    return [
        "map {query} {vastinit_query} {vastinit_query_clean} {",
        f'\t~{TOKEN_PARAM_REGEX} "$0" "$1$2$3"',
        '\tdefault "" ""',
        "}",
        *(["uri replace {vastinit_query} {vastinit_query_clean}"] * MAX_TOKEN_PARAMS),
        f"@token_left{suffix} expression `{HAS_TOKEN_PARAM}`",
        f'respond @token_left{suffix} "400 Bad Request: more than {MAX_TOKEN_PARAMS} token '
        'parameters" 400',
    ]


BASIC_USER = "vastai"  # the previous image's basic-auth user; WEB_USERNAME changes it


def basic_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """``VASTINIT_BASIC_<VAR>`` for each token variable set in ``env``: the base64 of
    ``USER:TOKEN``, what a client sends after ``Authorization: Basic``. Put in Caddy's own
    environment by ``--run`` (never in a file), so the Caddyfile matches it exactly, at the
    cost of a string compare per request (no password hashing)."""
    user = env.get("WEB_USERNAME") or BASIC_USER
    out = {}
    for name in ("OPEN_BUTTON_TOKEN", "WEB_PASSWORD"):
        value = env.get(name, "").strip()
        if value:
            out[f"VASTINIT_BASIC_{name}"] = base64.b64encode(f"{user}:{value}".encode()).decode()
    return out


def _basic(token_vars: tuple[str, ...], *, strip: bool) -> list[str]:
    # `Authorization: Basic base64(USER:TOKEN)`, the scheme in any case, then exactly the
    # value --run computed into Caddy's environment; never an empty one.
    auth = "{http.request.header.Authorization}"
    match = " || ".join(
        f'({{env.VASTINIT_BASIC_{name}}} != "" && '
        f"{auth}.size() == 6 + {{env.VASTINIT_BASIC_{name}}}.size() && "
        f'{auth}.matches("^[Bb][Aa][Ss][Ii][Cc][ ]") && '
        f"{auth}.endsWith({{env.VASTINIT_BASIC_{name}}}))"
        for name in token_vars
    )
    lines = [
        "# Authorization: Basic with user WEB_USERNAME (vastai) and the token as password.",
        f"@token_basic expression `{match}`",
        "vars @token_basic vastinit_basic yes",
    ]
    if strip:
        lines.append("request_header @token_basic -Authorization")
    return lines


def _strip_bearer(tokens: list[str], *, strip: bool) -> list[str]:
    # `Authorization: Bearer TOKEN` (RFC 7235: the scheme in any case) lets the request in
    # (vastinit_bearer) and is dropped, so the upstream never sees the token; any other
    # Authorization header passes untouched. A route whose upstream checks the same token
    # (pass_credentials) keeps it.
    auth = "{http.request.header.Authorization}"
    match = " || ".join(
        f'({auth}.size() == 7 + {t}.size() && {auth}.matches("^[Bb][Ee][Aa][Rr][Ee][Rr][ ]") '
        f"&& {auth}.endsWith({t}))"
        for t in tokens
    )
    lines = [
        "# Authorization: Bearer TOKEN, the scheme in any case (RFC 7235), then the token",
        "# exactly. It lets the request in"
        + (" and is not passed on: the upstream never sees it." if strip else "."),
        f"@token_bearer expression `{match}`",
        "vars @token_bearer vastinit_bearer yes",
    ]
    if strip:
        lines.append("request_header @token_bearer -Authorization")
    return lines


def _proxy(route: Route, flush: str) -> list[str]:
    return [
        f"reverse_proxy {route.host}:{route.target} {{",
        f"\tflush_interval {flush}",
        "\theader_up Host {upstream_hostport}",
        "\theader_up X-Real-IP {remote_host}",
        "\theader_down -X-Portal-Placeholder",
        "}",
    ]


def _loading(route: Route) -> list[str]:
    # 502/503/504 from reverse_proxy: the upstream is not listening yet. Browsers get a page
    # that reloads itself with status 200 (ADR 0017: a non-5xx interstitial, so no proxy in
    # front swaps it for its own error page); other clients get an honest 503 + Retry-After.
    name = _html(route.label or f"port {route.port}")
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{LOADING_REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{name} is starting</title></head>"
        '<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 4em auto; '
        'padding: 0 1em; color: #222">'
        f"<h1>{name} is starting&hellip;</h1>"
        "<p>The service behind this port is not answering yet. Large models can take "
        "several minutes to load.</p>"
        f"<p>This page reloads itself every {LOADING_REFRESH_S} seconds.</p></body></html>"
    )
    text = f"{_plain(route.label or f'port {route.port}')} is starting; retry shortly"
    return [
        "handle_errors {",
        "\t@starting expression `{err.status_code} in [502, 503, 504]`",
        "\troute @starting {",
        "\t\theader Cache-Control no-store",
        "\t\theader X-Portal-Placeholder true",
        f"\t\theader Retry-After {LOADING_REFRESH_S}",
        '\t\t@browser expression `{http.request.header.Sec-Fetch-Mode} == "navigate" || '
        '{http.request.header.Accept}.contains("text/html")`',
        '\t\theader @browser Content-Type "text/html; charset=utf-8"',
        f"\t\trespond @browser `{page}` 200",
        f'\t\trespond "{text}" 503',
        "\t}",
        "}",
    ]


def _indent(lines: list[str], depth: int) -> list[str]:
    return [("\t" * depth + line) if line else line for line in lines]


def _html(text: str) -> str:
    # Also braces (Caddy placeholders) and backticks (the Caddyfile's raw-string quote).
    escaped = html.escape(re.sub(r"[\x00-\x1f\x7f]", " ", text))
    return escaped.replace("{", "&#123;").replace("}", "&#125;").replace("`", "&#96;")


def _plain(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9 ._:/()-]", "", text)


def _comment(text: str) -> str:
    # Caddy substitutes {$VAR} before it even sees comments; keep those out as well.
    return re.sub(r"[\x00-\x1f\x7f{}$`]", " ", text)


# --- the command ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgePlan:
    """The routes Caddy serves (one per external port), the unit behind each, and why the
    others are not served."""

    routes: list[Route]
    units: dict[int, str | None]
    skipped: list[tuple[Route, str]]
    notes: list[str]


def plan(
    env: Mapping[str, str],
    units: Iterable[UnitPorts],
    *,
    jupyter_launch: bool = False,
    seed: bool = False,
) -> EdgePlan:
    """The edge's routes for the caddy unit's ``env`` and the units; StackError on bad input.
    The applications list is /etc/portal.yaml in the box role (``seed``: written from
    PORTAL_CONFIG when absent), else PORTAL_CONFIG (stack/portal_yaml.py)."""
    units = list(units)
    exposes = [(u.name, e) for u in units for e in u.exposes]
    portal = applications(env, seed=seed)
    routes, notes = merge_routes(portal, routes_from_expose(exposes))
    served, skipped = site_plan(routes, env, jupyter_launch=jupyter_launch)
    return EdgePlan(served, route_units(served, units), skipped, notes)


def render(env: Mapping[str, str], edge: EdgePlan, *, edge_dir: str | None = None) -> str:
    """The Caddyfile of ``edge`` for the caddy unit's ``env`` (gated under vastinit)."""
    gate = EdgeGate(edge_dir, edge.units) if edge_dir else None
    admin = env.get("CADDY_ADMIN") or (f"unix/{gate.admin_socket}" if gate else DEFAULT_ADMIN)
    return render_caddyfile(
        edge.routes,
        auth=auth_from_env(env),
        admin=admin,
        bind=env.get("CADDY_BIND") or None,
        tls=tls_from_env(env),
        flush_interval=env.get("CADDY_FLUSH_INTERVAL") or DEFAULT_FLUSH_INTERVAL,
        gate=gate,
    )


def build(
    env: Mapping[str, str],
    exposes: Iterable[tuple[str, Expose]] | Iterable[UnitPorts],
    *,
    jupyter_launch: bool = False,
    edge_dir: str | None = None,
    seed: bool = False,
) -> str:
    """The Caddyfile for ``env`` and the units' ``[[expose]]``; StackError on bad input."""
    units = [
        item if isinstance(item, UnitPorts) else UnitPorts(item[0], (item[1],)) for item in exposes
    ]
    edge = plan(env, units, jupyter_launch=jupyter_launch, seed=seed)
    for note in edge.notes:
        log.warning("caddy.expose_overridden", note=note)
    for route, reason in edge.skipped:
        log.info("caddy.route_not_served", port=route.port, label=route.label, reason=reason)
    return render(env, edge, edge_dir=edge_dir)


def unit_ports(units: Iterable[Unit], env: Mapping[str, str] | None = None) -> list[UnitPorts]:
    """What ties each enabled unit to routes (its [[expose]], its probes' loopback ports).
    A probe target with ``${VAR}`` (the sglang unit's ``${SGLANG_SERVER_PORT:-18000}``) is
    expanded with ``env``, the caddy unit's environment (the units share the image's
    environment and ``${WORKSPACE}/.env``)."""
    found = []
    for unit in units:
        if not unit.enabled:
            continue
        ports = set()
        for probe in (unit.readiness, unit.liveness):
            if probe is not None and probe.kind in (ProbeKind.HTTP, ProbeKind.TCP):
                target = str(probe.target)
                if env is not None and "$" in target:
                    try:
                        target = expand(target, env)
                    except ValueError:
                        continue  # a target that cannot expand ties the unit to no port
                port = probe_port(target)
                if port is not None:
                    ports.add(port)
        found.append(UnitPorts(unit.name, tuple(unit.expose), frozenset(ports)))
    return found


def jupyter_launch_mode(env: Mapping[str, str], launch_file: str = "/.launch") -> bool:
    """Vast's Jupyter launch mode: ``/.launch`` mentions jupyter and JUPYTER_OVERRIDE is off."""
    if env_flag(env, "JUPYTER_OVERRIDE", False):
        return False
    try:
        return "jupyter" in Path(launch_file).read_text(errors="replace").lower()
    except OSError:
        return False


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (mode 0644) so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _load_units(unit_dirs: list[Path] | None) -> list[UnitPorts]:
    from vastinit.config import load_units  # imported here: config is only needed by main
    from vastinit.paths import default_unit_dirs

    return unit_ports(load_units(unit_dirs or default_unit_dirs()).values(), os.environ)


def main(argv: list[str]) -> int:
    """Print the Caddyfile (or write it with --output; --run then execs Caddy on it)."""
    parser = argparse.ArgumentParser(
        prog="vastinit caddyfile",
        description="Generate the Caddyfile of the public edge from PORTAL_CONFIG and the "
        "units' [[expose]] tables (docs/stack.md).",
    )
    parser.add_argument("--output", "-o", type=Path, help="write it here instead of stdout")
    parser.add_argument(
        "--run",
        action="store_true",
        help="then exec `caddy run` on --output, with the auth token in its environment",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="where a generated token is kept (default: $VASTINIT_TOKEN_FILE or "
        "/etc/vastinit/caddy_token)",
    )
    parser.add_argument("--caddy", default=None, help="the caddy program (default: $CADDY_BIN)")
    parser.add_argument(
        "--units", metavar="DIR", type=Path, action="append", help="unit directory (repeat)"
    )
    args = parser.parse_args(argv)
    configure_cli_logging()
    if args.run and args.output is None:
        parser.error("--run needs --output")
    env = dict(os.environ)
    from vastinit.errors import ConfigError

    try:
        if args.run:
            # Caddy reads OPEN_BUTTON_TOKEN; when the token came from WEB_PASSWORD or the
            # token file, hand it over under that name. Only Caddy's environment gets it.
            env["OPEN_BUTTON_TOKEN"] = ensure_token(env, args.token_file or default_token_file(env))
            if env.get("WEB_PASSWORD"):
                env["WEB_PASSWORD"] = check_token(env["WEB_PASSWORD"], "WEB_PASSWORD")
            env.update(basic_credentials(env))
            if env_flag(env, "ENABLE_HTTPS", False):
                # The one owner of the instance certificate (docs/stack.md "HTTPS").
                status = ensure_certificate(env).status
                print(status, flush=True)
                send_status(env, status)
        text = build(
            env,
            _load_units(args.units),
            jupyter_launch=jupyter_launch_mode(env),
            edge_dir=env.get("VASTINIT_EDGE_DIR") or None,
            seed=args.run,  # the caddy unit's start seeds /etc/portal.yaml (box role)
        )
    except ConfigError as exc:
        print(f"vastinit caddyfile: the unit files are invalid:\n{exc}", file=sys.stderr)
        return 2
    except StackError as exc:
        print(f"vastinit caddyfile: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        write_atomically(args.output, text)
    except OSError as exc:
        print(f"vastinit caddyfile: cannot write {args.output}: {exc}", file=sys.stderr)
        return 1
    if not args.run:
        return 0
    caddy = args.caddy or env.get("CADDY_BIN") or "caddy"
    command = [caddy, "run", "--config", str(args.output), "--adapter", "caddyfile"]
    print(" ".join(command), flush=True)
    # The admin socket Caddy creates (under vastinit) is for its owner only: 0600.
    os.umask(0o077)
    try:
        os.execvpe(caddy, command, env)
    except OSError as exc:
        print(f"vastinit caddyfile: cannot run {caddy!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    return 0  # not reached
