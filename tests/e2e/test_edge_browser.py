"""A real browser on the loading page (issue 30): headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium; nothing downloaded) shows the real page within 500 ms
of the unit becoming ready, with no reload loop, and the unit's state while it waits.

The stack is tests/e2e/test_edge.py's: the shipped units, real Caddy, and the SGLang
stand-in whose port opens 2 s before it is ready.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_edge import LIVENESS_S, Edge, edge  # noqa: F401 (the fixture)
from tests.e2e.test_stack import BEARER, TOKEN, request
from tests.harness import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="chromium and chromium-driver are not installed (.ci/run installs them)",
    ),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(arg)
    # An explicit driver: Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


LAST_LINE = "var p = document.getElementById('last'); return p ? p.textContent : '';"


def _headline(driver: Any) -> str | None:
    found = driver.execute_script(
        "var h = document.getElementById('headline'); return h ? h.textContent : null;"
    )
    return None if found is None else str(found)


def test_the_browser_shows_the_real_page_within_500ms_of_ready(
    edge: Edge,  # noqa: F811
    browser: Any,
) -> None:
    wait_until(lambda: request(edge.api, "/v1/models", BEARER).status == 200, 30, "sglang")
    ready_before = edge.ready_at()
    # A liveness failure restarts the stand-in: down, then its port 2 s open before ready.
    edge.sick_file.touch()
    wait_until(
        lambda: request(edge.api, "/v1/models", BEARER).status == 503,
        LIVENESS_S + 2,
        "the loading page",
    )
    edge.sick_file.unlink()
    browser.get(f"http://127.0.0.1:{edge.api}/v1/models?token={TOKEN}")
    headline = _headline(browser)
    assert headline is not None and "SGLang API" in headline, browser.page_source[:500]
    seen = {headline}
    deadline = time.monotonic() + 30
    lines: set[str] = set()
    while (text := _headline(browser)) is not None:
        seen.add(text)
        lines.add(str(browser.execute_script(LAST_LINE)))
        assert time.monotonic() < deadline, f"still on the loading page: {seen}"
        time.sleep(0.01)
    shown = time.time()
    assert '"object"' in browser.page_source and "fake" in browser.page_source
    wait_until(
        lambda: (
            edge.ready_at(after=ready_before + 0.001) if _later_ready(edge, ready_before) else 0
        ),
        5,
        "the ready route event",
    )
    ready = edge.ready_at(after=ready_before + 0.001)
    assert shown - ready < 0.5, (shown - ready, seen)
    # It showed the unit's state while it waited (no fixed "starting" page), and its output.
    assert any("starting" in s or "restarting" in s for s in seen), seen
    assert any("Uvicorn running" in line or "Load weight" in line for line in lines), lines


def _later_ready(stack: Edge, after: float) -> bool:
    return any(
        e["ts"] > after + 0.001
        for e in stack.tail.find(type="route", unit="sglang", change="state", ready=True)
    )
