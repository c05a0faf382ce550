"""The fixed template of the portal's Cloudflare quick tunnels: a transient unit running
``cloudflared tunnel --no-autoupdate --url URL`` for one local URL.

The portal creates transient units only from templates like this one, never from text a
client sent: the only input is the local URL, and it is checked strictly (``http`` or
``https``, host ``127.0.0.1``, ``localhost`` or ``[::1]``, an explicit port, at most a plain
path; no credentials, query, fragment, spaces or other characters), so nothing can reach
the command but a well-formed local URL. The unit is checked again by the config pipeline
when it is created (``vastinit.config.load_transient``).
"""

from __future__ import annotations

import re

import tomli_w

TUNNEL_PREFIX = "tunnel-"
CLOUDFLARED = "cloudflared"
# cloudflared prints the public URL once the quick tunnel is up.
READY_LOG = r"https://[-a-z0-9]+\.trycloudflare\.com"

_LOCAL_URL = re.compile(
    r"(?P<scheme>https?)://(?P<host>127\.0\.0\.1|localhost|\[::1\])"
    r":(?P<port>[0-9]{1,5})(?P<path>/[A-Za-z0-9._~/-]*)?"
)


class TunnelURLError(ValueError):
    """The local URL is not one a tunnel may point at; ``str`` says why."""


def check_local_url(url: str) -> tuple[str, int]:
    """``(scheme, port)`` of a local URL a tunnel may point at; TunnelURLError otherwise."""
    if not isinstance(url, str):
        raise TunnelURLError("the local URL must be a string")
    if len(url) > 200:
        raise TunnelURLError("the local URL is longer than 200 characters")
    match = _LOCAL_URL.fullmatch(url)
    if match is None:
        raise TunnelURLError(
            f"not a local URL a tunnel may point at: {url!r}; expected "
            f"http(s)://127.0.0.1|localhost|[::1]:PORT[/path] (path of letters, digits, "
            f"and - . _ ~ /)"
        )
    port = int(match["port"])
    if not 1 <= port <= 65535 or match["port"].startswith("0"):
        raise TunnelURLError(f"not a valid port in {url!r}: {match['port']}")
    return match["scheme"], port


def tunnel_unit(local_url: str) -> tuple[str, str]:
    """``(name, unit file text)`` of the transient unit tunnelling ``local_url`` (checked
    by ``check_local_url``): ``tunnel-SCHEME-PORT``, so a second tunnel to the same local
    service is refused as a duplicate."""
    scheme, port = check_local_url(local_url)
    name = f"{TUNNEL_PREFIX}{scheme}-{port}"
    table = {
        "description": f"Cloudflare quick tunnel to {local_url}",
        "command": [CLOUDFLARED, "tunnel", "--no-autoupdate", "--url", local_url],
        "missing_program": "fail",
        "readiness": {"log": READY_LOG, "start_timeout": "2m"},
        "restart": {"policy": "on-failure", "limit": 5},
    }
    return name, tomli_w.dumps(table)
