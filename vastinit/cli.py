"""The ``vastinit`` command: a verb table whose modules are imported only when used.

``vastinit ctl`` must start fast, so nothing heavy is imported here; each verb's module
parses its own arguments. Every verb function takes ``argv`` (after the verb) and returns
the exit status.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# verb -> (module, function, one-line help)
VERBS: dict[str, tuple[str, str, str]] = {
    "run": ("vastinit.app", "main_run", "run the supervisor in the foreground (PID 1 or not)"),
    "check": ("vastinit.config.check", "main", "validate unit files and print the start order"),
    "import": (
        "vastinit.config.ini_import",
        "main",
        "write supervisord [program:x] sections as TOML unit files",
    ),
    "ctl": ("vastinit.control.cli", "main", "control a running vastinit (status, restart...)"),
    "launch": ("vastinit.stack.launch", "main", "build a server's argv and exec it (sglang)"),
    "provision": ("vastinit.stack.provision", "main", "run first-boot provisioning"),
    "caddyfile": ("vastinit.stack.caddy", "main", "print the generated Caddyfile"),
}


def usage() -> str:
    lines = ["usage: vastinit VERB [ARGS...]", "", "verbs:"]
    lines += [f"  {verb:<10} {help_}" for verb, (_, _, help_) in VERBS.items()]
    lines += ["", "`vastinit VERB --help` describes each verb."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        from vastinit import __version__

        print(f"vastinit {__version__}")
        return 0
    entry = VERBS.get(args[0])
    if entry is None:
        print(f"vastinit: unknown verb {args[0]!r}; try `vastinit --help`", file=sys.stderr)
        return 2
    module, function, _ = entry
    verb_main: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
    try:
        return verb_main(args[1:])
    except KeyboardInterrupt:
        return 130
