"""``vastinit launch NAME [ARGS...]``: build a server's argv from the environment and exec it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

# name -> module whose ``main(argv) -> int`` builds and execs that server
LAUNCHERS: dict[str, str] = {
    "sglang": "vastinit.stack.sglang",
}


def usage() -> str:
    return (
        "usage: vastinit launch NAME [ARGS...]\n\n"
        f"NAME is one of: {', '.join(sorted(LAUNCHERS))}. ARGS are passed to the server.\n"
        "`vastinit launch NAME --help` describes each."
    )


def main(argv: list[str]) -> int:
    """Dispatch to the named launcher (which normally never returns); 2 for an unknown name."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    module = LAUNCHERS.get(argv[0])
    if module is None:
        print(
            f"vastinit launch: unknown server {argv[0]!r}; known: {', '.join(sorted(LAUNCHERS))}",
            file=sys.stderr,
        )
        return 2
    launcher: Callable[[list[str]], int] = importlib.import_module(module).main
    return launcher(argv[1:])
