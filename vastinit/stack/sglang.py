"""``vastinit launch sglang``: the SGLang server's argv from the environment, then exec it.

The argv is ``SERVER --model-path $SGLANG_MODEL $SGLANG_ARGS <args file> <extra>``, then
``--host 127.0.0.1``, ``--port $SGLANG_SERVER_PORT`` (18000) and ``--tp-size N`` for
whichever of those the user left out. The user's arguments (and a ``--config`` YAML) are
read once, the way the installed SGLang reads them (its flag names, aliases, unique-prefix
abbreviations, ``--flag=value``, last one wins: ``sglang_flags.py``), and that one reading
decides what is added, warned about or refused (docs/stack.md has the table).

SERVER is ``$SGLANG_SERVER_CMD``, else ``sglang serve`` when the ``sglang`` script exists,
else ``python3 -m sglang.launch_server``. Just before the exec, a watcher is started that
tells the unit ``READY=1`` once the server answers ``/ready`` (``/health`` on older
releases): ``sglang_ready.py``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from vastinit.stack.common import StackError, configure_cli_logging, env_flag
from vastinit.stack.sglang_flags import (
    MODEL_TYPE_SINCE,
    READY_ENDPOINT_SINCE,
    ArgvError,
    Flags,
    at_least,
    choose_flags,
    config_arguments,
    installed_version,
    script_interpreter,
)

log = structlog.get_logger("vastinit.stack.sglang")

DEFAULT_ARGS_FILE = "/etc/sglang-args.conf"
DEFAULT_WORKSPACE = "/workspace"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18000
PORT_VARIABLE = "SGLANG_SERVER_PORT"  # not SGLANG_PORT: SGLang reads that one itself
PUBLIC_VARIABLE = "SGLANG_ALLOW_PUBLIC"
HEALTH_GENERATION = "SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION"
HEALTH_TIMEOUT = "SGLANG_HEALTH_CHECK_TIMEOUT"
SHIPPED_LIVENESS_TIMEOUT_S = 30  # units/sglang.toml [liveness] timeout
MODERN_SERVER = ("sglang", "serve")
LEGACY_SERVER = ("python3", "-m", "sglang.launch_server")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})
_SERVE_MODEL_TYPES = ("auto", "llm")  # what an older server can do without `sglang serve`'s flag


@dataclass
class Launch:
    """What ``plan`` decided: the argv, the server's extra environment, the ready check."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set in the server's environment
    port: int = DEFAULT_PORT
    ready_path: str = "/health"
    version: str | None = None  # the installed SGLang, None if unknown


@dataclass
class _Source:
    name: str  # "SGLANG_ARGS", the args file's path, "arguments", "--config FILE"
    args: list[str]


def server_command(
    env: Mapping[str, str], which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """The server argv head: ``$SGLANG_SERVER_CMD`` split, or the installed entry point."""
    custom = env.get("SGLANG_SERVER_CMD", "").strip()
    if custom:
        return split_args(custom, "SGLANG_SERVER_CMD")
    return list(MODERN_SERVER if which(MODERN_SERVER[0]) else LEGACY_SERVER)


def server_python(head: Sequence[str], which: Callable[[str], str | None]) -> str | None:
    """The Python that runs ``head``: the ``sglang`` script's interpreter, or ``python3``."""
    program = head[0] if head else ""
    path = program if "/" in program else which(program)
    if Path(program).name.startswith("python"):
        return path or program
    return script_interpreter(path) if path else None


def detect_version(head: Sequence[str], which: Callable[[str], str | None]) -> str | None:
    """The installed SGLang's version, from the distribution metadata of the server's Python."""
    return installed_version(server_python(head, which))


def split_args(text: str, source: str, *, comments: bool = False) -> list[str]:
    """``text`` split like a POSIX shell would (no expansion); StackError names ``source``."""
    try:
        return shlex.split(strip_comments(text) if comments else text)
    except ValueError as exc:
        raise StackError(f"{source}: cannot split into arguments: {exc}") from None


def strip_comments(text: str) -> str:
    """``text`` without shell comments: a ``#`` that starts a word, unquoted, to the line's end.

    shlex's own comment mode also cuts ``a#b`` in the middle of a word, which a shell does not.
    """
    out: list[str] = []
    quote = ""
    word_start = True
    i = 0
    while i < len(text):
        char = text[i]
        escaped = char == "\\" and quote != "'" and i + 1 < len(text)
        if escaped:
            out.append(char)  # keep the backslash for shlex; the next char is literal
            i += 1
            char = text[i]
        elif quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and word_start:
            end = text.find("\n", i)
            if end < 0:
                break
            i, char = end, "\n"
        out.append(char)
        word_start = not quote and not escaped and char in " \t\r\n"
        i += 1
    return "".join(out)


def read_args_file(path: str) -> list[str]:
    """The arguments in ``path`` (shell quoting, ``#`` comments, newlines); none if missing."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StackError(f"{path}: cannot read the SGLang arguments file: {exc}") from None
    return split_args(text, path, comments=True)


# ---- reading the user's arguments as SGLang will ----------------------------------------------


def _option_name(token: str) -> str | None:
    if not token.startswith("--") or token == "--":
        return None
    return token.split("=", 1)[0]


def _means(token: str, option: str, flags: Flags) -> bool:
    """Whether ``token`` is ``option`` to SGLang's parser: exact, ``=value``, or a unique
    abbreviation of it (argparse's rule: the only option string that starts so)."""
    name = _option_name(token)
    if name is None:
        return False
    if name == option:
        return True
    if not flags.allow_abbrev or not option.startswith(name) or flags.has(name):
        return False
    matches = [o for a in flags.actions for o in a["option_strings"] if o.startswith(name)]
    return matches == [option]


def _normalize_config(sources: list[_Source], flags: Flags) -> str | None:
    """Rewrite ``--config=FILE`` and abbreviations to ``--config FILE`` (SGLang merges the
    YAML only for that exact token); return the file, StackError for two of them."""
    found: list[tuple[str, str]] = []
    for source in sources:
        out: list[str] = []
        args = source.args
        i = 0
        while i < len(args):
            token = args[i]
            if _means(token, "--config", flags):
                if "=" in token:
                    value = token.split("=", 1)[1]
                    i += 1
                elif i + 1 < len(args):
                    value = args[i + 1]
                    i += 2
                else:
                    raise StackError(f"{source.name}: --config needs a file")
                if token.split("=", 1)[0] != "--config" or "=" in token:
                    log.info(
                        "sglang.config_spelling",
                        given=token,
                        note="SGLang reads the YAML only after the exact token --config: "
                        f"passed as --config {value}",
                    )
                found.append((source.name, value))
                continue
            out.append(token)
            i += 1
        source.args = out
    if len(found) > 1:
        where = ", ".join(f"{name}: {path}" for name, path in found)
        raise StackError(f"more than one --config ({where}); SGLang takes only one")
    return found[0][1] if found else None


def _extract_model_type(sources: list[_Source]) -> tuple[str | None, str | None]:
    """``--model-type X`` taken out as ``sglang serve`` (0.5.10+) does: exact spellings only."""
    value: str | None = None
    where: str | None = None
    for source in sources:
        out: list[str] = []
        args = source.args
        i = 0
        while i < len(args):
            token = args[i]
            if token == "--model-type":
                if i + 1 >= len(args):
                    raise StackError(f"{source.name}: --model-type needs a value")
                value, where = args[i + 1], source.name
                i += 2
                continue
            if token.startswith("--model-type="):
                value, where = token.split("=", 1)[1], source.name
                i += 1
                continue
            out.append(token)
            i += 1
        source.args = out
    return value, where


@dataclass
class Reading:
    """What the user's arguments set, as SGLang will read them."""

    values: dict[str, Any]  # dest -> last value
    origin: dict[str, str]  # dest -> the source of that last value
    readable: bool = True  # False: argparse could not read them (non-exact fixture only)

    def get(self, flags: Flags, option: str) -> Any:
        dest = flags.dest(option)
        return None if dest is None else self.values.get(dest)

    def given(self, flags: Flags, option: str) -> bool:
        dest = flags.dest(option)
        return dest is not None and dest in self.values

    def where(self, flags: Flags, option: str) -> str:
        dest = flags.dest(option)
        return self.origin.get(dest or "", "the arguments")


def read_arguments(sources: list[_Source], flags: Flags, *, exact: bool) -> Reading:
    """One reading of every source in order (last value wins), with where each came from.

    With the installed release's own flag list (``exact``), whatever SGLang would refuse is
    refused here (StackError). Otherwise unknown flags pass with a warning.
    """
    combined = [a for s in sources for a in s.args]
    try:
        values, unknown = flags.parse(combined, known_only=not exact)
    except ArgvError as exc:
        if exact:
            raise StackError(
                f"SGLang {flags.version} would refuse these arguments: {exc} "
                f"(in {', '.join(s.name for s in sources if s.args)})"
            ) from None
        log.warning(
            "sglang.args_unreadable",
            error=str(exc),
            flags_of=flags.version,
            note="passed to SGLang as given; nothing is added (host, port, tp size)",
        )
        return Reading({}, {}, readable=False)
    if unknown:
        log.warning(
            "sglang.unknown_flags",
            flags=shlex.join(unknown),
            flags_of=flags.version,
            note="not in this flag list: passed through; SGLang itself decides",
        )
    origin: dict[str, str] = {}
    for source in sources:
        try:
            mine, _ = flags.parse(source.args, known_only=True)
        except ArgvError:
            continue
        for dest in mine:
            origin[dest] = source.name
    return Reading(values, origin)


# ---- the plan ---------------------------------------------------------------------------------


def plan(
    env: Mapping[str, str],
    extra: Sequence[str] = (),
    *,
    gpus: Callable[[], int],
    which: Callable[[str], str | None] = shutil.which,
    version: Callable[[Sequence[str]], str | None] | None = None,
) -> Launch:
    """The server's launch for ``env`` (plus ``extra`` arguments); StackError on a refusal."""
    model = env.get("SGLANG_MODEL", "").strip()
    if not model:
        raise StackError(
            "SGLANG_MODEL is not set: set it to a Hugging Face model id or a local model path"
        )
    port = _port_setting(env)
    args_file = env.get("SGLANG_ARGS_FILE") or DEFAULT_ARGS_FILE
    sources = [
        _Source("SGLANG_ARGS", split_args(env.get("SGLANG_ARGS", ""), "SGLANG_ARGS")),
        _Source(args_file, read_args_file(args_file)),
        _Source("arguments", list(extra)),
    ]
    head = server_command(env, which)
    installed = (version or (lambda h: detect_version(h, which)))(head)
    choice = choose_flags(installed)
    flags = choice.flags
    if choice.note is not None:
        log.warning("sglang.flags", installed=installed, note=choice.note)

    head, model_type = _model_type(head, sources, installed, which)
    config = _normalize_config(sources, flags)
    if config is not None:
        sources.insert(0, _Source(f"--config {config}", config_arguments(config, flags)))
    reading = read_arguments(sources, flags, exact=choice.exact)

    user = [a for s in sources if not s.name.startswith("--config ") for a in s.args]
    config_args = ["--config", config] if config else []
    argv = [*head, "--model-path", model, *model_type, *config_args, *user]
    launch = Launch(argv=argv, port=port, version=installed)
    if reading.readable:
        _check_model(reading, flags, model)
        argv += _host(reading, flags, env)
        argv += _port(reading, flags, port)
        argv += _tp(reading, flags, env, gpus)
        _api_key(reading, flags)
        node_rank = reading.get(flags, "--node-rank") or 0
    else:
        node_rank = 0
    _check_route(env, port)
    launch.ready_path = _ready(launch, env, installed, int(node_rank))
    return launch


def _port_setting(env: Mapping[str, str]) -> int:
    raw = env.get(PORT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_PORT
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise StackError(f"{PORT_VARIABLE}={raw!r} is not a port number (1-65535)")
    return int(raw)


def _model_type(
    head: list[str],
    sources: list[_Source],
    installed: str | None,
    which: Callable[[str], str | None],
) -> tuple[list[str], list[str]]:
    """``--model-type`` is ``sglang serve``'s, never the server parser's: take it out of the
    sources; return the head and what to pass on. Kept where ``sglang serve`` strips it
    (0.5.10+); on older releases ``llm`` or ``auto`` is made to work by launching
    ``python3 -m sglang.launch_server`` (the LLM server, no Hub probe) instead."""
    serve = len(head) >= 2 and head[-1] == "serve" and Path(head[0]).name == "sglang"
    legacy = "sglang.launch_server" in head
    if not serve and not legacy:
        return head, []  # a server of the user's own: its arguments are its business
    value, where = _extract_model_type(sources)
    if value is None:
        return head, []
    if serve and (installed is None or at_least(installed, MODEL_TYPE_SINCE)):
        return head, ["--model-type", value]  # sglang serve takes it out itself
    if value not in _SERVE_MODEL_TYPES:
        raise StackError(
            f"--model-type {value} ({where}) needs `sglang serve` of SGLang >= {MODEL_TYPE_SINCE}"
            f"; installed: {installed or 'unknown'}"
        )
    if serve:
        python = server_python(head, which) or "python3"
        head = [python, "-m", "sglang.launch_server"]
    log.info(
        "sglang.model_type",
        given=f"--model-type {value}",
        installed=installed,
        note=f"this SGLang does not know it: taken out, and {shlex.join(head)} serves the "
        "model as an LLM, without the Hub probe",
    )
    return head, []


def _check_model(reading: Reading, flags: Flags, model: str) -> None:
    given = reading.get(flags, "--model-path")
    if given is not None and given != model:
        where = reading.where(flags, "--model-path")
        raise StackError(
            f"{where} sets the model path {given!r} but SGLANG_MODEL is {model!r}: "
            "set the model in SGLANG_MODEL only"
        )


def _host(reading: Reading, flags: Flags, env: Mapping[str, str]) -> list[str]:
    if not reading.given(flags, "--host"):
        return ["--host", DEFAULT_HOST]
    host = str(reading.get(flags, "--host"))
    where = reading.where(flags, "--host")
    if host in LOOPBACK_HOSTS:
        return []
    if host in WILDCARD_HOSTS:
        if not env_flag(env, PUBLIC_VARIABLE, False):
            raise StackError(
                f"--host {host!r} ({where}) serves SGLang on every interface, past the edge's "
                f"token: set {PUBLIC_VARIABLE}=true to mean it"
            )
        api_key = reading.given(flags, "--api-key")
        log.warning(
            "sglang.public_bind",
            host=host,
            note=(
                "SGLang listens on every interface, next to the edge: only its own --api-key "
                "guards it"
                if api_key
                else "UNAUTHENTICATED: SGLang listens on every interface with no auth at all"
            ),
        )
        return []
    raise StackError(
        f"--host {host!r} ({where}): the edge and the probes reach SGLang on 127.0.0.1, "
        f"which would not answer; leave --host out, or use 0.0.0.0 with {PUBLIC_VARIABLE}=true"
    )


def _port(reading: Reading, flags: Flags, port: int) -> list[str]:
    if not reading.given(flags, "--port"):
        return ["--port", str(port)]
    given = reading.get(flags, "--port")
    if given != port:
        raise StackError(
            f"--port {given} ({reading.where(flags, '--port')}) is not {PORT_VARIABLE} "
            f"({port}), the port Caddy's route and the unit's probes follow: set "
            f"{PORT_VARIABLE}={given} instead"
        )
    return []


def _tp(
    reading: Reading, flags: Flags, env: Mapping[str, str], gpus: Callable[[], int]
) -> list[str]:
    # USE_ALL_GPUS is the previous image's name for the same switch.
    auto = env_flag(env, "AUTO_PARALLEL", env_flag(env, "USE_ALL_GPUS", True))
    if not auto or reading.given(flags, "--tp-size"):
        return []
    count = gpus()
    if count < 1:
        log.info("sglang.auto_parallel", tp_size=None, reason="no visible NVIDIA GPU")
        return []
    others = [
        f"{option} {reading.get(flags, option)}"
        for option in ("--dp-size", "--pp-size", "--nnodes")
        if (reading.get(flags, option) or 1) > 1
    ]
    if others:
        log.warning(
            "sglang.auto_parallel",
            tp_size=count,
            given=", ".join(others),
            note="no tp size given: tp is this node's GPU count; pass --tp-size or set "
            "AUTO_PARALLEL=false if that is not what you want",
        )
    return ["--tp-size", str(count)]


def _api_key(reading: Reading, flags: Flags) -> None:
    if reading.given(flags, "--api-key"):
        log.warning(
            "sglang.api_key",
            where=reading.where(flags, "--api-key"),
            note="SGLang checks its own key on the API. Through the edge, authenticate to the "
            "edge with its cookie or ?token=EDGE_TOKEN and send 'Authorization: Bearer "
            "<api key>': the edge passes that header on. A request whose only credential is "
            "'Authorization: Bearer EDGE_TOKEN' passes the edge, which removes its own token, "
            "and SGLang answers it 401",
        )


def _check_route(env: Mapping[str, str], port: int) -> None:
    text = env.get("PORTAL_CONFIG", "").strip()
    if not text:
        return  # the default route follows SGLANG_SERVER_PORT
    from vastinit.stack.routes import parse_portal_config

    try:
        routes = parse_portal_config(text)
    except StackError:
        return  # Caddy reports it
    if not any(r.target == port and not r.is_alias for r in routes):
        log.warning(
            "sglang.not_routed",
            port=port,
            note="PORTAL_CONFIG routes no external port to SGLang's port: the edge will not "
            "publish it",
        )


def _ready(launch: Launch, env: Mapping[str, str], installed: str | None, node_rank: int) -> str:
    """The path the readiness watcher polls, and the server environment that makes it cheap."""
    raw = env.get(HEALTH_TIMEOUT, "").strip()
    if raw.isdigit() and int(raw) + 5 > SHIPPED_LIVENESS_TIMEOUT_S:
        log.warning(
            "sglang.health_timeout",
            note=f"{HEALTH_TIMEOUT}={raw}: /health_generate may take that long; give the "
            f"unit's [liveness] a timeout of at least {int(raw) + 10}s (a drop-in)",
        )
    if node_rank > 0:
        return "/health"  # ranks > 0 run only a small health server, /health always 200
    if at_least(installed, READY_ENDPOINT_SINCE):
        return "/ready"
    if env.get(HEALTH_GENERATION, "").strip() == "":
        launch.env[HEALTH_GENERATION] = "false"  # /health: a flag check, not a generation
    elif env[HEALTH_GENERATION].strip().lower() not in ("false", "0", "no", "n"):
        log.warning(
            "sglang.health_generation",
            note=f"{HEALTH_GENERATION}={env[HEALTH_GENERATION]}: this SGLang has no /ready and "
            "its /health generates a token (1 s or more): readiness is seen that much later",
        )
    return "/health"


# ---- the command --------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Build the SGLang command, print it on one line and exec it; 2 on bad input, 127 if absent."""
    parser = argparse.ArgumentParser(
        prog="vastinit launch sglang",
        description="Start the SGLang server: argv from SGLANG_MODEL, SGLANG_ARGS and "
        f"{DEFAULT_ARGS_FILE}; HOME and cwd are $WORKSPACE. See docs/stack.md.",
    )
    parser.add_argument("extra", nargs="*", metavar="ARG", help="more server arguments")
    if argv[:1] in (["-h"], ["--help"]):
        parser.print_help()
        return 0
    # Every argument belongs to the server, options included; a leading "--" is optional.
    extra = argv[1:] if argv[:1] == ["--"] else argv
    from vastinit.stack.gpu import gpu_count
    from vastinit.stack.sglang_ready import notify, start_watcher

    configure_cli_logging()
    env = os.environ
    notify_socket = env.pop("NOTIFY_SOCKET", "")  # for the watcher, not for SGLang
    try:
        launch = plan(env, extra, gpus=gpu_count)
    except StackError as exc:
        print(f"vastinit launch sglang: {exc}", file=sys.stderr)
        if notify_socket:
            notify(notify_socket, f"STATUS=refused: {exc}")
        return 2
    workspace = Path(env.get("WORKSPACE") or DEFAULT_WORKSPACE)
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        os.chdir(workspace)
    except OSError as exc:
        print(f"vastinit launch sglang: workspace {workspace}: {exc}", file=sys.stderr)
        return 2
    # Caches (HF, torch, triton) default under HOME; the workspace is the persistent volume.
    os.environ["HOME"] = str(workspace)
    os.environ.update(launch.env)
    command = launch.argv
    program = shutil.which(command[0])
    if program is None:
        print(
            f"vastinit launch sglang: cannot run {command[0]!r}: not found"
            " (is SGLang installed? SGLANG_SERVER_CMD overrides the program)",
            file=sys.stderr,
        )
        return 127
    setting = " ".join(f"{k}={shlex.quote(v)}" for k, v in launch.env.items())
    print(f"{setting} {shlex.join(command)}" if setting else shlex.join(command), flush=True)
    if notify_socket:
        start_watcher(launch.port, launch.ready_path, notify_socket)
    try:
        os.execv(program, command)
    except OSError as exc:
        print(
            f"vastinit launch sglang: cannot run {command[0]!r}: {exc.strerror or exc}"
            " (is SGLang installed? SGLANG_SERVER_CMD overrides the program)",
            file=sys.stderr,
        )
        return 127
    return 0  # not reached: execv returned only by raising
