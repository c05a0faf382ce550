"""``vastinit ctl``: control a running vastinit over its socket (standard library only).

Exit status: 0 done; 1 an error (unknown unit, no daemon, refused); 2 bad usage or invalid
unit files on reload; 3 a unit is not where it was asked to be (``status`` not fine,
``ready`` not ready, a start that ended failed or skipped, a wait that timed out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable

from vastinit.control import formatting as fmt
from vastinit.control.client import Client, CtlError, query, unit_path

TYPE_CHECKING = False  # typing costs milliseconds at import: only the type checker reads it
if TYPE_CHECKING:
    from typing import Any

PROG = "vastinit ctl"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FINE = 0, 1, 2, 3
TAIL_BYTES = 1600  # supervisorctl's `tail` default

Handler = Callable[[Client, argparse.Namespace], int]


def socket_path(explicit: str | None) -> str:
    """``--socket``, else $VASTINIT_SOCKET, else the default for this user."""
    if explicit:
        return explicit
    from vastinit.paths import default_socket

    return str(default_socket())


def _err(line: str) -> None:
    print(line, file=sys.stderr)


def _tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _width() -> int | None:
    if not _tty(sys.stdout):
        return None
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return None


# ---- verbs ------------------------------------------------------------------------------


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    """Print the status table (or JSON); 0 if every listed unit is fine, else 3."""
    if args.watch:
        return cmd_status_watch(client, args)
    data = client.get(query("/v1/status", {"unit": args.names}))
    units = data["units"]
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        color = _tty(sys.stdout) and not os.environ.get("NO_COLOR")
        print(fmt.status_table(units, data["now"], width=_width(), color=color))
    fine = all(u["state"] in fmt.FINE_STATES for u in units)
    return EXIT_OK if fine else EXIT_NOT_FINE


WATCH_TYPES = ["state", "reload", "restart_to_apply"]
WATCH_RETRY_S = 1.0


def _print_status(client: Client, args: argparse.Namespace) -> None:
    data = client.get(query("/v1/status", {"unit": args.names}))
    color = _tty(sys.stdout) and not os.environ.get("NO_COLOR")
    print(fmt.status_table(data["units"], data["now"], width=_width(), color=color), flush=True)


def cmd_status_watch(client: Client, args: argparse.Namespace) -> int:
    """``status --watch``: the table, then one line per state change (and reload, and
    restart-to-apply note) until Ctrl-C; a dropped connection is resumed from the last
    event seen, and when vastinit no longer holds what was missed, the table is printed
    again."""
    import time

    try:
        info = client.get("/v1/version")["events"]
        last, epoch = int(info["last_seq"]), str(info["epoch"])
        _print_status(client, args)  # everything after ``last`` comes on the stream
        lost = False
        while True:
            params = {"since": last, "epoch": epoch, "type": WATCH_TYPES, "unit": args.names}
            try:
                for batch in client.stream(query("/v1/events", params)):
                    if lost:
                        print("-- reconnected", file=sys.stderr, flush=True)
                        lost = False
                    for event in batch:
                        if event.get("type") == "reset":
                            last = int(event.get("last_seq", 0))
                            epoch = str(event.get("epoch", ""))
                            print("-- events were missed; status now:", flush=True)
                            _print_status(client, args)
                            continue
                        if event.get("type") == "dropped":
                            print(f"-- dropped: {event.get('reason')}", file=sys.stderr)
                            continue
                        last = int(event.get("seq", last))
                        line = fmt.event_line(event)
                        if line is not None:
                            print(line, flush=True)
                raise CtlError("vastinit ended the stream", code="closed")
            except CtlError as exc:
                if exc.code not in ("closed", "no_daemon"):
                    raise
                if not lost:
                    print(f"-- {exc}; reconnecting", file=sys.stderr, flush=True)
                    lost = True
                time.sleep(WATCH_RETRY_S)
    except KeyboardInterrupt:
        return EXIT_OK


def _action(verb: str) -> Handler:
    def run(client: Client, args: argparse.Namespace) -> int:
        body = {"units": args.names, "wait": not args.no_wait, "timeout": args.timeout}
        reply = client.post(f"/v1/{verb}", body)
        for result in reply["results"]:
            line = action_line(verb, result, args.timeout)
            if result["ok"]:
                print(line)
            else:
                _err(line)
        return EXIT_OK if reply["ok"] else EXIT_NOT_FINE

    run.__doc__ = f"{verb} units; 0 if each reached its goal, else 3."
    return run


def action_line(verb: str, result: dict[str, Any], timeout: float | None) -> str:
    """``web: ready`` / ``web: failed (exit 1)`` / ``web: timed out after 5s (running: ...)``."""
    name, outcome = result["name"], result["outcome"]
    if outcome == "requested":
        return f"{name}: {verb} requested"
    if outcome == "timeout":
        return f"{name}: timed out after {timeout:g}s ({result['state']}: {result['cause']})"
    if result["ok"]:
        return f"{name}: {outcome}"
    return f"{name}: {outcome} ({result['cause']})"


def _print_lines(
    entries: Iterable[dict[str, Any]], args: argparse.Namespace, state: dict[str, int]
) -> None:
    """Print log entries; the name prefix (several units) widens to the longest name seen."""
    out = []
    for entry in entries:
        if args.stream and entry["stream"] != args.stream:
            continue
        width = None
        if state["prefix"] >= 0:
            state["prefix"] = max(state["prefix"], len(entry["unit"]))
            width = state["prefix"]
        out.append(fmt.log_line(entry, prefix_width=width, timestamps=args.timestamps))
    if out:
        sys.stdout.write("\n".join(out) + "\n")
        sys.stdout.flush()


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    """Print the last N lines (merged in time order), then follow with ``-f``."""
    # One named unit prints bare lines; several (or all) prefix each with its unit.
    state = {"prefix": -1 if len(args.names) == 1 else max(map(len, args.names), default=0)}
    params = {"unit": args.names, "n": args.lines}
    if args.follow:
        return _follow_logs(client, args, state)
    _print_lines(client.get(query("/v1/logs", params))["lines"], args, state)
    return EXIT_OK


def _follow_logs(client: Client, args: argparse.Namespace, state: dict[str, int]) -> int:
    """``logs -f``: every line, from the event stream, until vastinit ends it (0); where
    vastinit had to leave lines out (this reader too slow) a ``vastinit`` line says how
    many; dropped for not reading: the reason on stderr, 1."""
    params = {"type": "log", "logs": args.names or ["*"], "n": args.lines}
    for batch in client.stream(query("/v1/events", params)):
        entries = []
        for event in batch:
            kind = event.get("type")
            if kind == "log":
                entries.append(event)
            elif kind == "skipped":
                text = f"skipped {event.get('lines')} lines ({event.get('reason')})"
                stream = args.stream or "stdout"  # shown whatever stream is asked for
                entries.append(
                    {"ts": event["ts"], "unit": "vastinit", "stream": stream, "text": text}
                )
            elif kind == "dropped":
                _print_lines(entries, args, state)
                _err(f"vastinit stopped following: {event.get('reason')}")
                return EXIT_ERROR
        _print_lines(entries, args, state)
    return EXIT_OK


def cmd_tail(client: Client, args: argparse.Namespace) -> int:
    """supervisorctl's ``tail [-f] [-BYTES] NAME [stdout|stderr]``."""
    args.names = [args.name]
    args.timestamps = False
    if args.follow:
        args.lines = args.lines if args.lines is not None else 10
        return cmd_logs(client, args)
    if args.lines is not None:
        return cmd_logs(client, args)
    lines = client.get(query("/v1/logs", {"unit": args.names, "n": 1000}))["lines"]
    if args.stream:
        lines = [e for e in lines if e["stream"] == args.stream]
    kept: list[dict[str, Any]] = []
    size = 0
    for entry in reversed(lines):
        size += len(entry["text"]) + 1
        if size > args.bytes and kept:
            break
        kept.append(entry)
    _print_lines(reversed(kept), args, {"prefix": -1})
    return EXIT_OK


def cmd_ready(client: Client, args: argparse.Namespace) -> int:
    """0 when the units (all if none named) are ready; ``--wait`` holds until they are."""
    data = client.get(
        query("/v1/ready", {"unit": args.names, "wait": args.wait, "timeout": args.timeout})
    )
    if args.json:
        print(json.dumps(data, indent=2))
    elif data["ready"]:
        count = len(data["units"])
        print(f"ready ({count} unit{'s' * (count != 1)})")
    else:
        for unit in data["units"]:
            if not unit["ready"]:
                _err(f"{unit['name']}: not ready ({unit['state']}: {unit['cause']})")
    return EXIT_OK if data["ready"] else EXIT_NOT_FINE


def _reload(client: Client, dry_run: bool) -> dict[str, Any] | None:
    """The reload reply, or None after printing every problem of invalid unit files."""
    try:
        reply: dict[str, Any] = client.post("/v1/reload", {"dry_run": dry_run})
    except CtlError as exc:
        if exc.code != "invalid_units":
            raise
        for problem in exc.reply.get("problems", []):
            _err(problem)
        _err(f"{PROG}: {exc}")
        return None
    return reply


def _notes(reply: dict[str, Any]) -> list[tuple[str, str]]:
    """The reload reply's "restart to apply" notes, by unit name."""
    return sorted(reply.get("restart_to_apply", {}).items())


def cmd_reload(client: Client, args: argparse.Namespace) -> int:
    """Re-read unit files and apply the difference; 2 (nothing changed) if any is invalid."""
    reply = _reload(client, args.dry_run)
    if reply is None:
        return EXIT_USAGE
    verb = {"added": "start", "removed": "stop", "changed": "restart"}
    for key in ("added", "removed", "changed"):
        for name in reply[key]:
            what = f"would {verb[key]}" if args.dry_run else key
            print(f"{name}: {what}")
    for name, cause in reply.get("env_restart", {}).items():
        what = "would restart" if args.dry_run else "restarted"
        print(f"{name}: {what} ({cause})")
    for name, note in _notes(reply):
        print(f"{name}: restart to apply: {note}")
    count = len(reply["unchanged"])
    print(f"{count} unit{'s' * (count != 1)} unchanged")
    return EXIT_OK


def cmd_reread(client: Client, args: argparse.Namespace) -> int:
    """supervisorctl's ``reread``: what ``update`` would change, changing nothing."""
    reply = _reload(client, True)
    if reply is None:
        return EXIT_USAGE
    lines = [f"{n}: available" for n in reply["added"]]
    lines += [f"{n}: changed" for n in reply["changed"]]
    lines += [f"{n}: changed ({cause})" for n, cause in reply.get("env_restart", {}).items()]
    lines += [f"{n}: disappeared" for n in reply["removed"]]
    lines += [f"{n}: restart to apply: {note}" for n, note in _notes(reply)]
    print("\n".join(lines) if lines else "No config updates to processes")
    return EXIT_OK


def cmd_update(client: Client, args: argparse.Namespace) -> int:
    """supervisorctl's ``update``: apply the unit files (the same as ``reload``)."""
    reply = _reload(client, False)
    if reply is None:
        return EXIT_USAGE
    for name in reply["removed"]:
        print(f"{name}: stopped\n{name}: removed process group")
    for name in [*reply["changed"], *reply.get("env_restart", {})]:
        print(f"{name}: stopped\n{name}: updated process group")
    for name in reply["added"]:
        print(f"{name}: added process group")
    for name, note in _notes(reply):
        print(f"{name}: restart to apply: {note}")
    return EXIT_OK


def cmd_avail(client: Client, args: argparse.Namespace) -> int:
    """supervisorctl's ``avail``: every unit loaded or on disk."""
    data = client.get("/v1/avail")
    for unit in data["units"]:
        if not unit["loaded"]:
            use = "avail"
        elif not unit["on_disk"]:
            use = "removed"
        else:
            use = "in use"
        print(f"{unit['name']:<32} {use:<9} {unit['state'] or '-'}")
    for problem in data["problems"]:
        _err(problem)
    return EXIT_OK


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    """Print the unit's effective spec (drop-ins merged) as TOML."""
    data = client.get(unit_path(args.name))
    print(f"# {data['source']}" if data["source"] else f"# unit {data['name']}")
    sys.stdout.write(data["toml"])
    return EXIT_OK


def cmd_signal(client: Client, args: argparse.Namespace) -> int:
    """Send a signal to each unit's main process; 1 if any could not be signalled."""
    code = EXIT_OK
    for name in args.names:
        try:
            reply = client.post("/v1/signal", {"unit": name, "signal": args.signal})
        except CtlError as exc:
            if exc.code in ("no_daemon", "permission_denied", "closed"):
                raise
            _err(f"{PROG}: {exc}")
            code = EXIT_ERROR
            continue
        print(f"{name}: sent {reply['signal']} to pid {reply['pid']}")
    return code


def cmd_pid(client: Client, args: argparse.Namespace) -> int:
    """vastinit's pid, or each named unit's main pid (0 when it has none)."""
    if not args.names:
        print(client.get("/v1/version")["pid"])
        return EXIT_OK
    for unit in client.get(query("/v1/status", {"unit": args.names}))["units"]:
        print(unit["pid"] or 0)
    return EXIT_OK


def cmd_shutdown(client: Client, args: argparse.Namespace) -> int:
    """Stop every unit and exit vastinit, as SIGTERM would."""
    client.post("/v1/shutdown")
    print("vastinit is shutting down")
    return EXIT_OK


def cmd_add(client: Client, args: argparse.Namespace) -> int:
    """Create a transient unit from a unit file (``-``: standard input) and start it."""
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as f:
                text = f.read(MAX_TRANSIENT_TEXT + 1)
    except (OSError, UnicodeDecodeError) as exc:
        _err(f"{PROG}: cannot read {args.file}: {exc}")
        return EXIT_USAGE
    try:
        reply = client.post("/v1/units", {"name": args.name, "toml": text})
    except CtlError as exc:
        if exc.code != "invalid_units":
            raise
        for problem in exc.reply.get("problems", []):
            _err(problem)
        _err(f"{PROG}: {args.name} not added")
        return EXIT_USAGE
    print(f"{reply['name']}: added (transient; {reply['state']}: {reply['cause']})")
    return EXIT_OK


def cmd_remove(client: Client, args: argparse.Namespace) -> int:
    """Stop transient units by their stop rule and forget them."""
    for name in args.names:
        client.delete(unit_path(name))
        print(f"{name}: removed")
    return EXIT_OK


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE", help="unit file text; - reads standard input")


MAX_TRANSIENT_TEXT = 64 * 1024  # the request body limit (protocol.MAX_BODY)


# ---- parsing -------------------------------------------------------------------------------


def _timeout_arg(text: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _names(p: argparse.ArgumentParser, nargs: str = "*", help_: str | None = None) -> None:
    p.add_argument("names", nargs=nargs, metavar="NAME", help=help_)


def _waiting(until: str) -> Callable[[argparse.ArgumentParser], None]:
    def configure(p: argparse.ArgumentParser) -> None:
        _names(p, "+")
        p.add_argument("--no-wait", action="store_true", help="return once asked")
        p.add_argument(
            "--timeout", type=_timeout_arg, metavar="S", help=f"wait at most S seconds {until}"
        )

    return configure


def _status_args(p: argparse.ArgumentParser) -> None:
    _names(p)
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="then print each state change as it happens, until Ctrl-C",
    )


def _logs_args(p: argparse.ArgumentParser) -> None:
    _names(p)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-n", "--lines", type=int, default=100, metavar="N", help="(default 100)")
    p.add_argument("-t", "--timestamps", action="store_true", help="prefix each line's time")
    p.set_defaults(stream=None)


def _tail_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("name", metavar="NAME")
    p.add_argument("stream", nargs="?", choices=("stdout", "stderr"))
    p.add_argument("-n", "--lines", type=int, metavar="N", help="lines, not bytes")
    p.add_argument("--bytes", type=int, default=TAIL_BYTES, help=argparse.SUPPRESS)


def _ready_args(p: argparse.ArgumentParser) -> None:
    _names(p)
    p.add_argument("--wait", action="store_true", help="wait until ready (or hopeless)")
    p.add_argument("--timeout", type=_timeout_arg, metavar="S", help="wait at most S seconds")
    p.add_argument("--json", action="store_true", help="print the reply as JSON")


def _reload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="only say what would change")


def _one_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")


def _signal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("signal", metavar="SIG", help="TERM, SIGHUP, 1, ...")
    _names(p, "+")


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


# verb -> (handler, one-line help, adds the verb's arguments to its parser)
VERBS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None]]] = {
    "status": (cmd_status, "status table; exit 0 if every unit is fine, 3 if not", _status_args),
    "start": (_action("start"), "start units, wait until ready", _waiting("for ready")),
    "stop": (_action("stop"), "stop units, wait until stopped", _waiting("for stopped")),
    "restart": (_action("restart"), "restart units, wait until ready", _waiting("for ready")),
    "logs": (cmd_logs, "last lines of units (all if none named), merged; -f follows", _logs_args),
    "ready": (cmd_ready, "exit 0 when the units (all if none named) are ready", _ready_args),
    "reload": (cmd_reload, "re-read unit files and apply what changed", _reload_args),
    "show": (cmd_show, "the effective unit (drop-ins merged) as TOML", _one_name),
    "signal": (cmd_signal, "send a signal to units' main processes", _signal_args),
    "add": (cmd_add, "create a transient unit from FILE (- = stdin) and start it", _add_args),
    "remove": (cmd_remove, "stop transient units and forget them", lambda p: _names(p, "+")),
    "shutdown": (cmd_shutdown, "stop every unit and exit vastinit, as SIGTERM", _no_args),
    "tail": (cmd_tail, "supervisorctl habit: tail [-f] [-BYTES] NAME [stdout|stderr]", _tail_args),
    "reread": (cmd_reread, "supervisorctl habit: what update would change", _no_args),
    "update": (
        cmd_update,
        "supervisorctl habit: apply unit file changes (= reload)",
        lambda p: _names(p, "*", "accepted; every change is applied"),
    ),
    "avail": (cmd_avail, "supervisorctl habit: units loaded or on disk", _no_args),
    "pid": (cmd_pid, "vastinit's pid, or the units' main pids (0 if none)", lambda p: _names(p)),
}


def usage(prog: str = PROG) -> str:
    """The verb list ``vastinit ctl --help`` prints."""
    lines = [f"usage: {prog} [--socket PATH] VERB [ARGS...]", "", "verbs:"]
    lines += [f"  {verb:<9} {help_}" for verb, (_, help_, _) in VERBS.items()]
    lines += [
        "",
        "--socket defaults to $VASTINIT_SOCKET, else /run/vastinit.sock (root) or",
        "$XDG_RUNTIME_DIR/vastinit.sock. `VERB --help` describes a verb's options.",
        "exit status: 0 ok, 1 error, 2 usage or invalid unit files, 3 not fine/ready",
    ]
    return "\n".join(lines)


def _split_global(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--socket PATH`` given before the verb, and the rest from the verb on."""
    socket: str | None = None
    args = list(argv)
    while args and args[0].startswith("--socket"):
        opt = args.pop(0)
        if opt.startswith("--socket="):
            socket = opt.split("=", 1)[1]
        elif args:
            socket = args.pop(0)
    return socket, args


def _verb_parser(prog: str, verb: str) -> argparse.ArgumentParser:
    """The parser of one verb: only that one is built, so ``ctl`` starts fast."""
    _, help_, configure = VERBS[verb]
    p = argparse.ArgumentParser(prog=f"{prog} {verb}", description=help_)
    p.add_argument("--socket", metavar="PATH", help="control socket path")
    configure(p)
    return p


def _bytes_flag(argv: list[str]) -> list[str]:
    """supervisorctl writes ``tail -1600 NAME``: turn ``-1600`` into ``--bytes=1600``."""
    return [f"--bytes={a[1:]}" if a[:1] == "-" and a[1:].isdigit() else a for a in argv]


def run(argv: list[str], *, prog: str = PROG) -> int:
    """Parse ``argv`` (a verb and its arguments), run it, return the exit status."""
    socket, args = _split_global(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(prog), file=sys.stdout if args else sys.stderr)
        return EXIT_OK if args else EXIT_USAGE
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        _err(f"{prog}: unknown verb {verb!r}; try `{prog} --help`")
        return EXIT_USAGE
    parsed = _verb_parser(prog, verb).parse_args(_bytes_flag(rest) if verb == "tail" else rest)
    client = Client(socket_path(parsed.socket or socket))
    try:
        code: int = VERBS[verb][0](client, parsed)
        return code
    except CtlError as exc:
        _err(f"{prog}: {exc}")
        return EXIT_ERROR
    except BrokenPipeError:
        # `ctl logs | head`: the reader left; exit quietly like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def main(argv: list[str]) -> int:
    """``vastinit ctl ARGS``: returns the exit status."""
    return run(argv)
