"""``vastinit launch sglang``: the SGLang server's argv from the environment, then exec it.

The argv is ``SERVER --model-path $SGLANG_MODEL $SGLANG_ARGS <args file> <extra>``, then
``--host 127.0.0.1 --port 18000 --tp-size N`` for whichever of those the user left out.
SERVER is ``$SGLANG_SERVER_CMD``, else ``sglang serve`` (SGLang >= 0.5.5), else
``python3 -m sglang.launch_server`` on older images that lack the ``sglang`` script.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from vastinit.stack.common import StackError, configure_cli_logging, env_flag

log = structlog.get_logger("vastinit.stack.sglang")

DEFAULT_ARGS_FILE = "/etc/sglang-args.conf"
DEFAULT_WORKSPACE = "/workspace"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18000
MODERN_SERVER = ("sglang", "serve")
LEGACY_SERVER = ("python3", "-m", "sglang.launch_server")

# Any of these means the user chose the tensor-parallel size (``--config`` may set it in YAML).
TP_FLAGS = ("--tp", "--tp-size", "--tensor-parallel-size", "--config")
# argparse accepts unambiguous abbreviations, so "--tp-s" and "--tensor-para" mean tp too.
_TP_ABBREVIATED = (("--tp", "--tp-size"), ("--tensor", "--tensor-parallel-size"))
# With these and no tp flag, "all local GPUs" is probably not the tp size the user wants.
_OTHER_PARALLELISM = (
    "--dp",
    "--dp-size",
    "--data-parallel-size",
    "--pp",
    "--pp-size",
    "--pipeline-parallel-size",
    "--nnodes",
)


def option_given(args: Sequence[str], names: Sequence[str]) -> bool:
    """Whether any of ``names`` appears in ``args`` as ``--name`` or ``--name=value``."""
    return any(_option_name(token) in names for token in args)


def tp_given(args: Sequence[str]) -> bool:
    """Whether ``args`` already set the tensor-parallel size, in any spelling argparse accepts."""
    for token in args:
        name = _option_name(token)
        if name is None:
            continue
        if name in TP_FLAGS:
            return True
        if any(name.startswith(stem) and full.startswith(name) for stem, full in _TP_ABBREVIATED):
            return True
    return False


def _option_name(token: str) -> str | None:
    if not token.startswith("--") or token == "--":
        return None
    return token.split("=", 1)[0]


def server_command(
    env: Mapping[str, str], which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """The server argv head: ``$SGLANG_SERVER_CMD`` split, or the installed entry point."""
    custom = env.get("SGLANG_SERVER_CMD", "").strip()
    if custom:
        return split_args(custom, "SGLANG_SERVER_CMD")
    return list(MODERN_SERVER if which(MODERN_SERVER[0]) else LEGACY_SERVER)


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


def build_argv(
    head: Sequence[str],
    model: str,
    user_args: Sequence[str],
    *,
    auto_parallel: bool,
    gpus: Callable[[], int],
) -> list[str]:
    """``head --model-path model user_args`` plus the host, port and tp flags the user left out.

    ``gpus`` is called only when a tp flag would be added, so NVML is not touched otherwise.
    """
    given = [*head, *user_args]
    argv = [*head, "--model-path", model, *user_args]
    if not option_given(given, ("--host",)):
        argv += ["--host", DEFAULT_HOST]
    if not option_given(given, ("--port",)):
        argv += ["--port", str(DEFAULT_PORT)]
    if auto_parallel and not tp_given(given):
        count = gpus()
        if count >= 1:
            argv += ["--tp-size", str(count)]
            if option_given(given, _OTHER_PARALLELISM):
                log.warning(
                    "sglang.auto_parallel",
                    tp_size=count,
                    note="dp/pp/nnodes given without a tp size: tp is this node's GPU count; "
                    "pass --tp-size or set AUTO_PARALLEL=false if that is not what you want",
                )
        else:
            log.info("sglang.auto_parallel", tp_size=None, reason="no visible NVIDIA GPU")
    return argv


def plan(
    env: Mapping[str, str],
    extra: Sequence[str] = (),
    *,
    gpus: Callable[[], int],
    which: Callable[[str], str | None] = shutil.which,
) -> list[str]:
    """The full server argv for ``env`` (plus ``extra`` arguments); StackError on bad input."""
    model = env.get("SGLANG_MODEL", "").strip()
    if not model:
        raise StackError(
            "SGLANG_MODEL is not set: set it to a Hugging Face model id or a local model path"
        )
    user_args = [
        *split_args(env.get("SGLANG_ARGS", ""), "SGLANG_ARGS"),
        *read_args_file(env.get("SGLANG_ARGS_FILE") or DEFAULT_ARGS_FILE),
        *extra,
    ]
    # USE_ALL_GPUS is the previous image's name for the same switch.
    default = env_flag(env, "USE_ALL_GPUS", True)
    return build_argv(
        server_command(env, which),
        model,
        user_args,
        auto_parallel=env_flag(env, "AUTO_PARALLEL", default),
        gpus=gpus,
    )


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

    configure_cli_logging()
    env = os.environ
    try:
        command = plan(env, extra, gpus=gpu_count)
    except StackError as exc:
        print(f"vastinit launch sglang: {exc}", file=sys.stderr)
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
    print(shlex.join(command), flush=True)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(
            f"vastinit launch sglang: cannot run {command[0]!r}: {exc.strerror or exc}"
            " (is SGLang installed? SGLANG_SERVER_CMD overrides the program)",
            file=sys.stderr,
        )
        return 127
    return 0  # not reached: execvp returned only by raising
