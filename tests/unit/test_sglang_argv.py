"""``vastinit launch sglang``: the argv built from the environment, and the real exec."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from vastinit.stack.common import StackError
from vastinit.stack.gpu import visible_count
from vastinit.stack.sglang import plan, read_args_file, server_command

HEAD = ["sglang", "serve"]
DEFAULTS = ["--host", "127.0.0.1", "--port", "18000"]
NO_FILE = "/nonexistent/sglang-args.conf"


def _sglang_on_path(name: str) -> str | None:
    return f"/usr/local/bin/{name}" if name == "sglang" else None


def _plan(
    env: dict[str, str],
    extra: list[str] | None = None,
    gpus: Callable[[], int] = lambda: 4,
    version: str | None = "0.5.8",
) -> list[str]:
    """The argv for SGLang ``version`` (the Containerfile's base by default)."""
    full = {"SGLANG_MODEL": "org/model", "SGLANG_ARGS_FILE": NO_FILE, **env}
    launch = plan(full, extra or [], gpus=gpus, which=_sglang_on_path, version=lambda h: version)
    return launch.argv


def _user_part(argv: list[str]) -> list[str]:
    """What follows ``HEAD --model-path org/model``."""
    assert argv[:4] == [*HEAD, "--model-path", "org/model"], argv
    return argv[4:]


def _never() -> int:
    raise AssertionError("the GPU count must not be read when a tp flag is given")


@pytest.mark.parametrize(
    ("sglang_args", "expected"),
    [
        ("", []),
        ("--enable-metrics", ["--enable-metrics"]),
        ("--chat-template 'my template'", ["--chat-template", "my template"]),
        ('--chat-template "my template"', ["--chat-template", "my template"]),
        (r"--chat-template my\ template", ["--chat-template", "my template"]),
        ('--served-model-name "it\'s"', ["--served-model-name", "it's"]),
        (
            """--json-model-override-args '{"rope_scaling": {"type": "yarn", "factor": 4}}'""",
            ["--json-model-override-args", '{"rope_scaling": {"type": "yarn", "factor": 4}}'],
        ),
        ("--api-key $SECRET", ["--api-key", "$SECRET"]),  # no expansion: no eval
        (
            "  --dp-size  1\t--chunked-prefill-size 2  ",
            ["--dp-size", "1", "--chunked-prefill-size", "2"],
        ),
    ],
)
def test_sglang_args_are_split_like_a_shell(sglang_args: str, expected: list[str]) -> None:
    argv = _plan({"SGLANG_ARGS": sglang_args, "AUTO_PARALLEL": "false"})
    assert _user_part(argv) == [*expected, *DEFAULTS]


def test_unbalanced_quote_in_sglang_args_is_a_clear_error() -> None:
    with pytest.raises(StackError, match="SGLANG_ARGS: cannot split"):
        _plan({"SGLANG_ARGS": "--chat-template 'oops"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("--enable-metrics\n", ["--enable-metrics"]),
        ("--a 1\n--b 2\n", ["--a", "1", "--b", "2"]),
        ("# a comment line\n--a 1  # trailing comment\n", ["--a", "1"]),
        ("--x '# not a comment'\n", ["--x", "# not a comment"]),
        ('--x "#q" \\#e\n', ["--x", "#q", "#e"]),  # quoted or escaped: not a comment
        ("--x a#b # c\n", ["--x", "a#b"]),  # like a shell: "#" starts a comment only as a word
        ("--json '{\"a\":\n 1}'\n", ["--json", '{"a":\n 1}']),  # quotes span lines
        ("--a 1\r\n--b 2\r\n", ["--a", "1", "--b", "2"]),  # CRLF from a Windows editor
    ],
)
def test_args_file_is_split_with_comments_and_newlines(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = tmp_path / "sglang-args.conf"
    path.write_text(text)
    assert read_args_file(str(path)) == expected


def test_args_file_follows_sglang_args_and_extra_args_come_last(tmp_path: Path) -> None:
    path = tmp_path / "args.conf"
    path.write_text("--mem-fraction-static 0.8\n")
    argv = _plan(
        {
            "SGLANG_ARGS": "--max-running-requests 8",
            "SGLANG_ARGS_FILE": str(path),
            "AUTO_PARALLEL": "0",
        },
        extra=["--context-length", "4096"],
    )
    assert _user_part(argv) == [
        "--max-running-requests", "8", "--mem-fraction-static", "0.8",
        "--context-length", "4096", *DEFAULTS,
    ]  # fmt: skip


def test_missing_args_file_adds_nothing() -> None:
    assert read_args_file(NO_FILE) == []


def test_unreadable_args_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=str(tmp_path)):
        read_args_file(str(tmp_path))  # a directory


TP_SPELLINGS = [
    ["--tp", "2"],
    ["--tp=2"],
    ["--tp-size", "2"],
    ["--tp-size=2"],
    ["--tensor-parallel-size", "2"],
    ["--tensor-parallel-size=2"],
    ["--tp-s", "2"],  # argparse abbreviations
    ["--tensor-para=2"],
    ["--tens", "2"],
]


@pytest.mark.parametrize("where", ["SGLANG_ARGS", "file", "extra"])
@pytest.mark.parametrize("flag", TP_SPELLINGS, ids=lambda f: f[0])
def test_any_tp_flag_anywhere_disables_auto_parallel(
    tmp_path: Path, flag: list[str], where: str
) -> None:
    env: dict[str, str] = {}
    extra: list[str] = []
    if where == "SGLANG_ARGS":
        env["SGLANG_ARGS"] = shlex.join(["--enable-metrics", *flag])
    elif where == "file":
        path = tmp_path / "args.conf"
        path.write_text("--enable-metrics\n" + shlex.join(flag) + "\n")
        env["SGLANG_ARGS_FILE"] = str(path)
    else:
        extra = ["--enable-metrics", *flag]
    argv = _plan(env, extra, gpus=_never)
    # The user's flag is kept as given and nothing is appended after host and port.
    assert _user_part(argv) == ["--enable-metrics", *flag, *DEFAULTS]


@pytest.mark.parametrize(
    "not_tp", ["--tpx", "--tensorboard-dir", "--configs", "--top-k", "--dp-size", "--tp-sizes"]
)
def test_flags_that_only_look_like_tp_keep_auto_parallel(not_tp: str) -> None:
    # An unknown SGLang release: flags the nearest flag list lacks pass with a warning.
    argv = _plan({"SGLANG_ARGS": f"{not_tp} 1"}, version=None)
    assert argv[-2:] == ["--tp-size", "4"]


@pytest.mark.parametrize(
    ("env", "expect_tp"),
    [
        ({}, True),  # default on
        ({"AUTO_PARALLEL": ""}, True),
        ({"AUTO_PARALLEL": "1"}, True),
        ({"AUTO_PARALLEL": "true"}, True),
        ({"AUTO_PARALLEL": "Yes"}, True),
        ({"AUTO_PARALLEL": "ON"}, True),
        ({"AUTO_PARALLEL": "0"}, False),
        ({"AUTO_PARALLEL": "false"}, False),
        ({"AUTO_PARALLEL": "NO"}, False),
        ({"AUTO_PARALLEL": "off"}, False),
        ({"USE_ALL_GPUS": "false"}, False),  # the previous image's name
        ({"USE_ALL_GPUS": "false", "AUTO_PARALLEL": "true"}, True),  # AUTO_PARALLEL wins
    ],
)
def test_auto_parallel_switch(env: dict[str, str], expect_tp: bool) -> None:
    argv = _plan(env, gpus=lambda: 8)
    if expect_tp:
        assert _user_part(argv) == [*DEFAULTS, "--tp-size", "8"]
    else:
        assert _user_part(argv) == DEFAULTS


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_bad_auto_parallel_value_is_a_clear_error(value: str) -> None:
    with pytest.raises(StackError, match="AUTO_PARALLEL"):
        _plan({"AUTO_PARALLEL": value})


DEVICES = [(0, "GPU-aaaa"), (1, "GPU-bbbb"), (2, "GPU-cccc"), (3, "GPU-dddd")]


@pytest.mark.parametrize(
    ("cuda_visible", "tp"),
    [
        (None, ["--tp-size", "4"]),
        ("0,1", ["--tp-size", "2"]),
        ("3", ["--tp-size", "1"]),
        ("GPU-bbbb,GPU-dddd,0", ["--tp-size", "3"]),
        ("0,9,1", ["--tp-size", "1"]),
        ("", []),  # no visible GPU: no tp flag at all
        ("-1", []),
    ],
)
def test_tp_size_is_the_number_of_visible_gpus(cuda_visible: str | None, tp: list[str]) -> None:
    argv = _plan({}, gpus=lambda: visible_count(DEVICES, cuda_visible))
    assert _user_part(argv) == [*DEFAULTS, *tp]


def test_no_gpu_adds_no_tp_flag_and_says_so() -> None:
    with structlog.testing.capture_logs() as logs:
        argv = _plan({}, gpus=lambda: 0)
    assert "--tp-size" not in argv
    assert [e for e in logs if e["event"] == "sglang.auto_parallel" and e["tp_size"] is None]


def test_missing_model_is_a_clear_error() -> None:
    with pytest.raises(StackError, match="SGLANG_MODEL is not set"):
        plan({"SGLANG_MODEL": "  "}, gpus=lambda: 1, version=lambda h: None)


@pytest.mark.parametrize(
    ("env", "which", "head"),
    [
        ({}, _sglang_on_path, ["sglang", "serve"]),
        ({}, lambda name: None, ["python3", "-m", "sglang.launch_server"]),  # older images
        ({"SGLANG_SERVER_CMD": "/opt/x/bin/python -m sglang.launch_server"}, _sglang_on_path,
         ["/opt/x/bin/python", "-m", "sglang.launch_server"]),
    ],
)  # fmt: skip
def test_server_command(
    env: dict[str, str], which: Callable[[str], str | None], head: list[str]
) -> None:
    assert server_command(env, which) == head


# --- the real command: `python -m vastinit launch sglang` execs a stand-in server ------------

STAND_IN = (
    "import json, os, sys; "
    "print('STANDIN ' + json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), "
    "'home': os.environ['HOME']}))"
)


def _launch(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("SGLANG_ARGS", "SGLANG_MODEL")}
    full.update(
        {
            "SGLANG_SERVER_CMD": shlex.join([sys.executable, "-c", STAND_IN]),
            "SGLANG_ARGS_FILE": str(tmp_path / "absent.conf"),
            "WORKSPACE": str(tmp_path / "ws" / "deep"),
            "AUTO_PARALLEL": "false",
        }
    )
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "vastinit", "launch", "sglang", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_launch_prints_the_command_then_execs_it_in_the_workspace(tmp_path: Path) -> None:
    result = _launch(tmp_path, {"SGLANG_MODEL": "org/m", "SGLANG_ARGS": "--x 'a b'"}, "--y")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    standin = [line for line in lines if line.startswith("STANDIN ")]
    assert len(standin) == 1, result.stdout
    seen = json.loads(standin[0].removeprefix("STANDIN "))
    expected = ["--model-path", "org/m", "--x", "a b", "--y", *DEFAULTS]
    assert seen["argv"] == expected
    workspace = str(tmp_path / "ws" / "deep")
    assert seen["cwd"] == workspace  # created, since it did not exist
    assert seen["home"] == workspace
    # The printed command is one shell-quoted line that reproduces the argv.
    printed = lines[lines.index(standin[0]) - 1]
    assert shlex.split(printed)[-len(expected) :] == expected
    assert "'a b'" in printed


def test_launch_without_model_exits_2_with_a_message(tmp_path: Path) -> None:
    result = _launch(tmp_path, {})
    assert result.returncode == 2
    assert "SGLANG_MODEL is not set" in result.stderr
    assert "STANDIN" not in result.stdout


def test_launch_of_a_missing_program_exits_127(tmp_path: Path) -> None:
    result = _launch(tmp_path, {"SGLANG_MODEL": "m", "SGLANG_SERVER_CMD": "/nonexistent/sglang"})
    assert result.returncode == 127
    assert "/nonexistent/sglang" in result.stderr


def test_launch_counts_real_gpus_when_auto_parallel_is_on(tmp_path: Path) -> None:
    from vastinit.stack.gpu import gpu_count

    expected = gpu_count()
    result = _launch(tmp_path, {"SGLANG_MODEL": "m", "AUTO_PARALLEL": "true"})
    assert result.returncode == 0, result.stderr
    standin = next(x for x in result.stdout.splitlines() if x.startswith("STANDIN "))
    argv = json.loads(standin.removeprefix("STANDIN "))["argv"]
    if expected:
        assert argv[-2:] == ["--tp-size", str(expected)]
    else:
        assert "--tp-size" not in argv
        assert "no visible NVIDIA GPU" in result.stderr
