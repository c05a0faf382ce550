"""The loading page's words for each state of a route's unit (vastinit/supervisor/edge.py)."""

from __future__ import annotations

import pytest

from vastinit.supervisor.edge import headline, loading_page

BASE = {"port": 8000, "label": "SGLang API", "routed": True, "unit": "sglang"}
NO_MODEL = "SGLANG_MODEL is not set"
WAITING = "waiting for provisioning"
BACKOFF = "exit 1; restarting in 5s"


@pytest.mark.parametrize(
    ("state", "reason", "title", "detail"),
    [
        ("skipped", NO_MODEL, "SGLang API is not started", NO_MODEL),
        ("waiting", WAITING, "SGLang API is starting", WAITING),
        ("running", "pid 57", "SGLang API is starting", "pid 57"),
        ("failed", "exit 1", "SGLang API failed", "exit 1. It does not start again by itself."),
        ("backoff", BACKOFF, "SGLang API stopped; restarting", BACKOFF),
        ("stopped", "stopped by ctl", "SGLang API is stopped", "stopped by ctl"),
        ("ready", "http ok", "SGLang API is ready", "Opening it now."),
    ],
)
def test_the_page_says_where_the_unit_is(state: str, reason: str, title: str, detail: str) -> None:
    assert headline({**BASE, "state": state, "reason": reason, "status": None}) == (title, detail)


def test_a_status_text_is_the_detail_while_starting() -> None:
    view = {**BASE, "state": "running", "reason": "pid 57", "status": "downloading the model"}
    assert headline(view) == ("SGLang API is starting", "downloading the model")


def test_routes_without_a_unit_or_gone_say_so() -> None:
    assert headline({**BASE, "unit": None})[0] == "SGLang API: nothing serves this port"
    assert headline({"port": 9, "routed": False})[0] == "port 9: this route is gone"


def test_the_page_is_escaped_and_needs_nothing_from_the_internet() -> None:
    page = loading_page({**BASE, "label": "<b>x</b>", "state": "running", "reason": "a & b"})
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt; is starting" in page
    assert "a &amp; b" in page
    assert 'new EventSource("/.vastinit/status")' in page
    assert "http-equiv" not in page and "src=" not in page and "http://" not in page
