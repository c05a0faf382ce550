"""HTTP probe: a GET that answers 2xx or 3xx passes (redirects are not followed).

aiohttp is imported on first use: a stack without HTTP probes never pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vastinit.config.values import format_duration
from vastinit.health.result import Outcome, connect_error_text, failed, passed

if TYPE_CHECKING:
    import aiohttp


def new_session() -> aiohttp.ClientSession:
    """A client session for one unit's run of probes (call inside the event loop).

    No keep-alive: each probe opens a fresh connection, so a server that stops accepting
    fails its probe (as with Kubernetes). No certificate check: an ``https`` probe usually
    reaches 127.0.0.1 with a self-signed certificate. No proxy from the environment: a
    probe of 127.0.0.1 must not go through ``HTTP_PROXY``. No cookies are kept.
    """
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, ssl=False),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "vastinit-probe"},
        trust_env=False,
    )


async def probe_http(session: aiohttp.ClientSession, url: str, timeout: float) -> Outcome:
    """GET ``url``; the whole exchange (connect, headers) must finish within ``timeout``."""
    import aiohttp

    try:
        async with session.get(
            url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            status, reason = resp.status, resp.reason or ""
    except TimeoutError:  # aiohttp's timeouts are TimeoutError subclasses
        return failed(f"no answer within {format_duration(timeout)}")
    except aiohttp.ClientConnectorError as exc:
        return failed(connect_error_text(exc))
    except aiohttp.ServerDisconnectedError:
        return failed("server closed the connection without answering")
    except aiohttp.InvalidURL:
        return failed(f"invalid URL {url!r}")
    except aiohttp.ClientError as exc:
        return failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    text = f"HTTP {status} {reason}".rstrip()
    return passed(text) if 200 <= status < 400 else failed(text)
