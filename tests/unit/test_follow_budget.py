"""A follower that goes away gives its queued bytes back to the followers' shared budget."""

from __future__ import annotations

import os

import anyio

from vastinit.logs.console import ConsoleSink
from vastinit.logs.mux import LogMux
from vastinit.supervisor.commands import _Follow


def test_a_follower_that_goes_away_gives_its_bytes_back_to_the_shared_budget() -> None:
    async def main() -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        console = ConsoleSink(w, color=False)
        try:
            mux = LogMux(console, None)
            ulog = mux.unit_log("u", None, 1 << 20, 1)
            gone = _Follow(mux.subscribe(None))
            ulog._deliver("stdout", b"x" * 1000 + b"\n")
            assert mux.follow_budget.queued == 1001
            gone.close()  # what the control server does when the client disconnects
            assert mux.follow_budget.queued == 0
            # Many followers coming and going never use the budget up for the others.
            for _ in range(100):
                _Follow(mux.subscribe(None)).close()
            live = mux.subscribe(None)
            ulog._deliver("stdout", b"y\n")
            assert live.queued_bytes == 2 and mux.follow_budget.queued == 2
        finally:
            console.close()
            os.close(r)
            os.close(w)

    anyio.run(main)
