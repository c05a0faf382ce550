"""``supervisorctl``: supervisord's client habits mapped onto vastinit's control socket.

Scripts written for the previous image keep working: ``supervisorctl status`` prints
supervisord's one line per program (exit 0 when every unit is fine, 3 otherwise),
``supervisorctl restart sglang`` restarts and waits for ready, ``reread`` / ``update``
reload unit files, and ``all`` names every unit. supervisorctl's own options (``-c FILE``,
``-u``, ``-p``) are accepted and ignored; ``-s unix:///PATH`` picks the socket.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from vastinit.control import cli
from vastinit.control import formatting as fmt
from vastinit.control.client import Client, CtlError, query

PROG = "supervisorctl"
_IGNORED_WITH_VALUE = frozenset(
    {"-c", "--configuration", "-u", "--username", "-p", "--password", "-r", "--history-file"}
)
# verbs handed to `vastinit ctl` unchanged (after `all` is expanded)
_PASS_THROUGH = frozenset({"reread", "update", "shutdown"})
USAGE = """\
usage: supervisorctl [-s unix:///PATH] VERB [ARGS...]   (vastinit's supervisorctl)

  status [NAME...|all]         start|stop|restart NAME...|all    tail [-f] [-BYTES] NAME
  pid [NAME...|all]            signal SIG NAME...|all           reread   update   avail
  reload (= update)            shutdown                          version

`vastinit ctl --help` lists vastinit's own verbs."""


def _split_options(argv: list[str]) -> tuple[str | None, list[str]]:
    """supervisorctl's leading options: the socket from ``-s``; the rest are dropped."""
    socket: str | None = None
    args = list(argv)
    while args and args[0].startswith("-") and args[0] not in ("-h", "--help"):
        opt = args.pop(0)
        name, eq, value = opt.partition("=")
        if name in ("-s", "--serverurl", "--socket"):
            value = value if eq else (args.pop(0) if args else "")
            if value.startswith("unix://"):
                socket = value[len("unix://") :]
            elif name == "--socket":
                socket = value
        elif name in _IGNORED_WITH_VALUE and not eq and args:
            args.pop(0)
    return socket, args


def _expand_all(client: Client, names: list[str]) -> list[str]:
    """supervisorctl's names: ``all`` is every unit, ``GROUP:*`` (or a group's bare name)
    its units, ``GROUP:NAME`` the unit NAME."""
    if not any(n == "all" or ":" in n for n in names):
        return names
    units = client.get("/v1/status")["units"]
    if "all" in names:
        return [u["name"] for u in units]
    out: list[str] = []
    for name in names:
        group, colon, proc = name.partition(":")
        if proc == "*":
            members = [u["name"] for u in units if u.get("group", u["name"]) == group]
            out += members or [group]
        else:
            out.append(proc if colon else name)
    return out


EXIT_NO_SUCH = 4
"""supervisorctl status: a name that is no process (LSB "program or service status unknown")."""


def _status(client: Client, names: list[str]) -> int:
    """supervisorctl's exit codes: 0 all RUNNING, 3 one is not, 4 an unknown name."""
    known = {u["name"] for u in client.get("/v1/status")["units"]}
    missing = [n for n in names if n not in known]
    for name in missing:
        print(f"{name}: ERROR (no such process)")
    wanted = [n for n in names if n in known]
    if names and not wanted:
        return EXIT_NO_SUCH
    data = client.get(query("/v1/status", {"unit": wanted}))
    for unit in data["units"]:
        print(fmt.supervisor_status_line(unit, data["now"]))
    if missing:
        return EXIT_NO_SUCH
    running = all(u["state"] in ("ready", "running") for u in data["units"])
    return cli.EXIT_OK if running else cli.EXIT_NOT_FINE


_LSB_NOT_RUNNING = 7
"""supervisorctl's exit status for pid/signal of a program that is not running."""
_RUNNING = frozenset({"waiting", "starting", "running", "ready", "backoff"})


def _known(client: Client) -> dict[str, str]:
    """Every unit's state, by name."""
    return {u["name"]: u["state"] for u in client.get("/v1/status")["units"]}


def _hint(name: str, known: dict[str, str]) -> None:
    """vastinit's addition on stderr (stdout is supervisorctl's): the close matches."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    print(f"{PROG}: no unit {name!r}{hint}", file=sys.stderr)


def _action(client: Client, verb: str, names: list[str], *, every: bool = False) -> int:
    """start/stop/restart with supervisorctl's messages: ``NAME: ERROR (no such process)``
    (exit 1), ``ERROR (already started)``, ``ERROR (not running)``."""
    if not names:
        print(f"Error: {verb} requires a process name", file=sys.stderr)
        return cli.EXIT_USAGE
    units = client.get("/v1/status")["units"]
    states = {u["name"]: u["state"] for u in units}
    # supervisorctl names a unit of a group (numprocs, [group:x]) GROUP:NAME
    spec = {u["name"]: _namespec(u) for u in units}
    code = cli.EXIT_OK
    todo = []
    if every:  # `all`: as supervisord, only those the verb applies to
        names = [
            n
            for n in names
            if (verb == "stop") == (states.get(n) in (*_RUNNING, "stopping")) or verb == "restart"
        ]
    for name in names:
        if name not in states:
            print(f"{name}: ERROR (no such process)")
            _hint(name, states)
            code = cli.EXIT_ERROR
        elif verb == "start" and states[name] in _RUNNING:
            print(f"{spec[name]}: ERROR (already started)")
        elif verb == "stop" and states[name] not in (*_RUNNING, "stopping"):
            print(f"{spec[name]}: ERROR (not running)")
        else:
            todo.append(name)
    if not todo:
        return code
    names = todo
    reply = client.post(f"/v1/{verb}", {"units": names, "wait": True, "timeout": None})
    for result in reply["results"]:
        name = spec.get(result["name"], result["name"])
        if not result["ok"]:
            print(f"{name}: ERROR ({result['outcome']}: {result['cause']})", file=sys.stderr)
        elif verb == "stop":
            print(f"{name}: stopped")
        elif verb == "restart":
            print(f"{name}: stopped\n{name}: started")
        else:
            print(f"{name}: started")
    return code if reply["ok"] else cli.EXIT_NOT_FINE


def _namespec(unit: dict[str, object]) -> str:
    group, name = unit.get("group") or unit["name"], unit["name"]
    return f"{name}" if group == name else f"{group}:{name}"


def _pid(client: Client, names: list[str]) -> int:
    states = {u["name"]: u for u in client.get("/v1/status")["units"]}
    if not names:
        print(client.get("/v1/version")["pid"])
        return cli.EXIT_OK
    code = cli.EXIT_OK
    for name in names:
        if name not in states:
            print(f"No such process {name}")
            code = cli.EXIT_ERROR
        else:
            print(states[name].get("pid") or 0)
            if not states[name].get("pid"):
                code = _LSB_NOT_RUNNING
    return code


def _signal(client: Client, args: list[str]) -> int:
    if len(args) < 2:
        print("Error: signal requires a signal name and a process name")
        return cli.EXIT_USAGE
    sig, names = args[0], args[1:]
    states = _known(client)
    code = cli.EXIT_OK
    for name in names:
        if name not in states:
            print(f"{name}: ERROR (no such process)")
            code = cli.EXIT_ERROR
        elif states[name] not in (*_RUNNING, "stopping"):
            print(f"{name}: ERROR (not running)")
            code = _LSB_NOT_RUNNING
        else:
            result = client.post("/v1/signal", {"unit": name, "signal": sig})
            if result.get("pid"):
                print(f"{name}: signalled")
    return code


def _avail(client: Client) -> int:
    """supervisorctl's avail: ``NAME  in use|avail  auto|manual  999:999``."""
    autostart = {u["name"]: u.get("autostart", True) for u in client.get("/v1/status")["units"]}
    for unit in client.get("/v1/avail")["units"]:
        use = "in use" if unit["loaded"] else "avail"
        start = "manual" if autostart.get(unit["name"]) is False else "auto"
        print(f"{unit['name']:<32} {use:<9} {start:<9} 999:999")
    return cli.EXIT_OK


def _clear(client: Client, names: list[str]) -> int:
    states = _known(client)
    code = cli.EXIT_OK
    for name in names:
        if name in states:
            print(f"{name}: cleared")  # vastinit keeps the log; its file rotates by size
        else:
            print(f"{name}: ERROR (no such process)")
            code = cli.EXIT_ERROR
    return code


def _tail(client: Client, rest: list[str], socket_args: list[str]) -> int:
    names = [a for a in rest if not a.startswith("-") and a not in ("stdout", "stderr")]
    states = _known(client)
    for name in names:
        if name not in states:
            print(f"{name}: ERROR (no such process name)")
            return cli.EXIT_ERROR
    return cli.run([*socket_args, "tail", *rest], prog=PROG)


def _version(client: Client) -> int:
    print(client.get("/v1/version")["version"])
    return cli.EXIT_OK


def run(argv: list[str]) -> int:
    """Run one supervisorctl command line; returns its exit status."""
    socket, args = _split_options(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return cli.EXIT_OK if args else cli.EXIT_USAGE
    verb, rest = args[0], args[1:]
    if verb == "reload":
        verb = "update"  # supervisord's reload restarts everything; ours changes only what changed
    socket_args = ["--socket", socket] if socket else []
    client = Client(cli.socket_path(socket))
    every = "all" in rest
    handlers: dict[str, Callable[[], int]] = {
        "status": lambda: _status(client, _expand_all(client, rest)),
        "start": lambda: _action(client, "start", _expand_all(client, rest), every=every),
        "stop": lambda: _action(client, "stop", _expand_all(client, rest), every=every),
        "restart": lambda: _action(client, "restart", _expand_all(client, rest), every=every),
        "version": lambda: _version(client),
        "pid": lambda: _pid(client, _expand_all(client, rest)),
        "signal": lambda: _signal(client, [*rest[:1], *_expand_all(client, rest[1:])]),
        "avail": lambda: _avail(client),
        "clear": lambda: _clear(client, _expand_all(client, rest)),
        "tail": lambda: _tail(client, rest, socket_args),
    }
    try:
        if verb in handlers:
            return handlers[verb]()
        if verb in _PASS_THROUGH:
            return cli.run([*socket_args, verb, *rest], prog=PROG)
    except CtlError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return cli.EXIT_ERROR
    print(f"{PROG}: unknown command {verb!r}; `supervisorctl help` lists them", file=sys.stderr)
    return cli.EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """The ``supervisorctl`` console script."""
    try:
        return run(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return 130
