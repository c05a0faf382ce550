"""``vastinit launch sglang`` against SGLang's own argument parser, per release (issue 23).

The fixture matrix: every spelling of tp size, port, host, model path and ``--config`` in
SGLANG_ARGS, the args file or the YAML, for each committed fixture (0.5.6.post2, 0.5.8, the
newest); the launcher's argv is then read by a parser rebuilt from the same fixture, with
SGLang's ``--config`` merge (tests/sglang_standin.py), and the result must be what
docs/stack.md promises. Then one test per item of the issue, through the real command and a
fake installed SGLang that dispatches and parses as that release does. Last, the real
``sglang`` parser, when it can be imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.sglang_standin import VERSIONS, install_fake_sglang, sglang_parse
from vastinit.stack.common import StackError
from vastinit.stack.sglang import Launch, plan
from vastinit.stack.sglang_flags import (
    FIXTURE_DIR,
    at_least,
    choose_flags,
    fixture_versions,
    version_key,
)

MODEL = "org/model"
GPUS = 4
NO_FILE = "/nonexistent/sglang-args.conf"


def _plan(
    version: str | None,
    env: dict[str, str],
    extra: list[str] | None = None,
    gpus: Callable[[], int] = lambda: GPUS,
) -> Launch:
    full = {"SGLANG_MODEL": MODEL, "SGLANG_ARGS_FILE": NO_FILE, **env}
    return plan(
        full,
        extra or [],
        gpus=gpus,
        which=lambda name: f"/usr/local/bin/{name}" if name == "sglang" else None,
        version=lambda head: version,
    )


def _server_args(launch: Launch) -> list[str]:
    assert launch.argv[:2] == ["sglang", "serve"], launch.argv
    return launch.argv[2:]


# ---- fixtures -------------------------------------------------------------------------------


def test_fixtures_are_committed_for_the_three_releases() -> None:
    assert fixture_versions() == list(VERSIONS)
    assert (Path(__file__).parents[1] / "data" / "sglang").resolve() == FIXTURE_DIR.resolve()
    for version in VERSIONS:
        data = json.loads((FIXTURE_DIR / f"{version}.json").read_text())
        assert data["sglang"] == version
        assert data["allow_abbrev"] is True  # prepare_server_args: ArgumentParser()
        options = {o for a in data["actions"] for o in a["option_strings"]}
        assert {"--model-path", "--model", "--tp-size", "--tensor-parallel-size"} <= options
        assert {"--host", "--port", "--config", "--node-rank", "--api-key"} <= options
        assert "--model-type" not in options  # `sglang serve`'s, never the server parser's


@pytest.mark.parametrize(
    ("installed", "chosen", "exact"),
    [
        ("0.5.8", "0.5.8", True),
        ("0.5.6.post2", "0.5.6.post2", True),
        ("0.5.23", "0.5.23", True),
        ("0.5.9", "0.5.8", False),  # nearest older
        ("0.5.8.post1", "0.5.8", False),
        ("0.5.30", "0.5.23", False),  # newer than every fixture: never refused for that
        ("0.5.6", "0.5.6.post2", False),  # older than every fixture: the oldest
        ("0.5.10rc1", "0.5.8", False),
        (None, "0.5.23", False),  # unknown: the newest
        ("garbage", "0.5.23", False),
    ],
)
def test_fixture_choice(installed: str | None, chosen: str, exact: bool) -> None:
    choice = choose_flags(installed)
    assert (choice.flags.version, choice.exact) == (chosen, exact)
    assert (choice.note is None) == exact


def test_version_order() -> None:
    order = ["0.5.6", "0.5.6.post1", "0.5.6.post2", "0.5.8", "0.5.10rc1", "0.5.10", "0.5.23"]
    assert sorted(reversed(order), key=version_key) == order
    assert at_least("0.5.10", "0.5.10") and not at_least("0.5.9", "0.5.10")
    assert not at_least(None, "0.5.10")


# ---- the matrix -------------------------------------------------------------------------------

YAML = "server.yaml"


def _case(
    where: str, tokens: list[str], yaml: str | None, tmp: Path
) -> tuple[dict[str, str], list[str]]:
    """``tokens`` placed in SGLANG_ARGS, the args file or the extra arguments; a YAML file."""
    env: dict[str, str] = {}
    extra: list[str] = []
    args = [*tokens]
    if yaml is not None:
        (tmp / YAML).write_text(yaml)
        args = [a.replace(YAML, str(tmp / YAML)) for a in args]
    if where == "SGLANG_ARGS":
        env["SGLANG_ARGS"] = shlex.join(args)
    elif where == "file":
        (tmp / "args.conf").write_text("# the args file\n" + shlex.join(args) + "\n")
        env["SGLANG_ARGS_FILE"] = str(tmp / "args.conf")
    else:
        extra = args
    return env, extra


# (name, tokens, YAML text, what SGLang must end up with)
MATRIX: list[tuple[str, list[str], str | None, dict[str, Any]]] = [
    ("nothing", [], None, {"tp_size": GPUS}),
    # tp size: every spelling, the launcher adds none
    ("--tp", ["--tp", "2"], None, {"tp_size": 2}),
    ("--tp=", ["--tp=2"], None, {"tp_size": 2}),
    ("--tp-size", ["--tp-size", "2"], None, {"tp_size": 2}),
    ("--tp-size=", ["--tp-size=2"], None, {"tp_size": 2}),
    ("--tensor-parallel-size", ["--tensor-parallel-size", "2"], None, {"tp_size": 2}),
    ("--tensor-parallel-size=", ["--tensor-parallel-size=2"], None, {"tp_size": 2}),
    ("--tp-s", ["--tp-s", "2"], None, {"tp_size": 2}),
    ("--tens", ["--tens", "2"], None, {"tp_size": 2}),
    ("--tensor-para=", ["--tensor-para=2"], None, {"tp_size": 2}),
    ("tp twice: last wins", ["--tp-size", "8", "--tp", "2"], None, {"tp_size": 2}),
    ("yaml tp-size", ["--config", YAML], "tp-size: 2\n", {"tp_size": 2, "config": True}),
    ("yaml tensor-parallel-size", ["--config", YAML], "tensor-parallel-size: 2\n",
     {"tp_size": 2, "config": True}),
    ("yaml tp (abbreviation)", ["--config", YAML], "tp: 2\n", {"tp_size": 2, "config": True}),
    ("cli tp beats yaml", ["--config", YAML, "--tp", "2"], "tp-size: 8\n",
     {"tp_size": 2, "config": True}),
    # port: the one setting; the same value in any spelling is accepted, never doubled
    ("--port", ["--port", "18000"], None, {"port": 18000}),
    ("--port=", ["--port=18000"], None, {"port": 18000}),
    ("--por", ["--por", "18000"], None, {"port": 18000}),
    ("--po=", ["--po=18000"], None, {"port": 18000}),
    ("yaml port", ["--config", YAML], "port: 18000\n", {"port": 18000, "config": True}),
    # host: loopback spellings kept as given
    ("--host", ["--host", "127.0.0.1"], None, {"host": "127.0.0.1"}),
    ("--host=localhost", ["--host=localhost"], None, {"host": "localhost"}),
    ("--ho", ["--ho", "127.0.0.1"], None, {"host": "127.0.0.1"}),
    ("yaml host", ["--config", YAML], "host: localhost\n", {"host": "localhost", "config": True}),
    # model path: SGLANG_MODEL's value again is harmless; the server reads SGLANG_MODEL
    ("--model-path same", ["--model-path", MODEL], None, {}),
    ("--model same", ["--model", MODEL], None, {}),
    ("--model-p= same", [f"--model-p={MODEL}"], None, {}),
    ("yaml model-path same", ["--config", YAML], f"model-path: {MODEL}\n", {"config": True}),
    # --config: every spelling reaches SGLang as the token it merges the YAML for
    ("--config=", [f"--config={YAML}"], "tp-size: 2\n", {"tp_size": 2, "config": True}),
    ("--conf", ["--conf", YAML], "tp-size: 2\n", {"tp_size": 2, "config": True}),
    ("--conf=", [f"--conf={YAML}"], "tp-size: 2\n", {"tp_size": 2, "config": True}),
    ("yaml log-level", ["--config", YAML], "log-level: warning\nenable-metrics: true\n",
     {"config": True, "log_level": "warning"}),
]  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("where", ["SGLANG_ARGS", "file", "extra"])
@pytest.mark.parametrize(
    ("tokens", "yaml", "expect"),
    [pytest.param(t, y, e, id=name) for name, t, y, e in MATRIX],
)
def test_matrix_sglang_reads_what_the_docs_promise(
    tmp_path: Path,
    version: str,
    where: str,
    tokens: list[str],
    yaml: str | None,
    expect: dict[str, Any],
) -> None:
    env, extra = _case(where, tokens, yaml, tmp_path)
    launch = _plan(version, env, extra)
    args = _server_args(launch)
    seen = sglang_parse(version, args)  # SystemExit here = SGLang would refuse the argv
    assert seen["model_path"] == MODEL
    assert seen["tp_size"] == expect.get("tp_size", GPUS)
    assert seen["host"] == expect.get("host", "127.0.0.1")
    assert seen["port"] == expect.get("port", 18000)
    assert seen["merged"] == (str(tmp_path / YAML) if expect.get("config") else None)
    assert seen["config"] is None  # never a --config SGLang keeps as a value and ignores
    assert seen["log_level"] == expect.get("log_level")  # None: SGLang's default (info)
    # Nothing the user gave is overridden: each of these appears once at most.
    for flag in ("--host", "--port", "--tp-size", "--config"):
        assert args.count(flag) <= 1, args


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("tokens", "yaml", "env", "reason"),
    [
        (["--port", "9000"], None, {}, "set SGLANG_SERVER_PORT=9000 instead"),
        (["--por=9000"], None, {}, "set SGLANG_SERVER_PORT=9000 instead"),
        (["--config", YAML], "port: 9000\n", {}, "set SGLANG_SERVER_PORT=9000 instead"),
        (["--port", "18000"], None, {"SGLANG_SERVER_PORT": "9000"}, "set SGLANG_SERVER_PORT=18000"),
        (["--host", "0.0.0.0"], None, {}, "set SGLANG_ALLOW_PUBLIC=true to mean it"),
        (["--ho=::"], None, {}, "set SGLANG_ALLOW_PUBLIC=true to mean it"),
        (["--host", "10.1.2.3"], None, {}, "reach SGLang on 127.0.0.1"),
        (["--host", "::1"], None, {"SGLANG_ALLOW_PUBLIC": "1"}, "reach SGLang on 127.0.0.1"),
        (["--config", YAML], "host: 0.0.0.0\n", {}, "SGLANG_ALLOW_PUBLIC"),
        (["--model-path", "other/model"], None, {}, "set the model in SGLANG_MODEL only"),
        (["--model", "other/model"], None, {}, "set the model in SGLANG_MODEL only"),
        (["--config", YAML], "model-path: other/model\n", {}, "SGLANG_MODEL only"),
        (["--config", YAML, "--conf", YAML], "{}\n", {}, "more than one --config"),
        (["--config", "server.json"], None, {}, "wants a .yaml or .yml file"),
        (["--config", "/nonexistent/x.yaml"], None, {}, "does not exist"),
        (["--pp", "2"], None, {}, "ambiguous option: --pp could match"),
        (["--no-such-flag", "1"], None, {}, "unrecognized arguments: --no-such-flag 1"),
        (["--tp-size", "two"], None, {}, "invalid int value"),
        (["--model-type", "diffusion"], None, {}, "needs `sglang serve` of SGLang >= 0.5.10"),
    ],
)  # fmt: skip
def test_matrix_what_cannot_work_is_refused_with_the_reason(
    tmp_path: Path,
    version: str,
    tokens: list[str],
    yaml: str | None,
    env: dict[str, str],
    reason: str,
) -> None:
    if "--model-type" in tokens and at_least(version, "0.5.10"):
        pytest.skip("sglang serve of this release takes --model-type itself")
    case_env, extra = _case("SGLANG_ARGS", tokens, yaml, tmp_path)
    with pytest.raises(StackError) as caught:
        _plan(version, {**case_env, **env}, extra)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message  # one line, for the log and `ctl status`


@pytest.mark.parametrize("version", VERSIONS)
def test_matrix_public_bind_on_purpose_is_logged_as_unauthenticated(version: str) -> None:
    with structlog.testing.capture_logs() as logs:
        launch = _plan(version, {"SGLANG_ARGS": "--host 0.0.0.0", "SGLANG_ALLOW_PUBLIC": "true"})
    assert sglang_parse(version, _server_args(launch))["host"] == "0.0.0.0"
    [event] = [e for e in logs if e["event"] == "sglang.public_bind"]
    assert "UNAUTHENTICATED" in event["note"]


@pytest.mark.parametrize("version", VERSIONS)
def test_matrix_port_setting_moves_the_server(version: str) -> None:
    launch = _plan(version, {"SGLANG_SERVER_PORT": "30001"})
    assert sglang_parse(version, _server_args(launch))["port"] == 30001
    assert launch.port == 30001


# ---- readiness, per release -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "env", "path", "server_env"),
    [
        ("0.5.6.post2", {}, "/health", {"SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION": "false"}),
        ("0.5.8", {}, "/health", {"SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION": "false"}),
        ("0.5.19", {}, "/health", {"SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION": "false"}),
        ("0.5.20", {}, "/ready", {}),
        ("0.5.23", {}, "/ready", {}),
        (None, {}, "/health", {"SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION": "false"}),
        # the user's own setting is kept
        ("0.5.8", {"SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION": "true"}, "/health", {}),
        ("0.5.8", {"SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION": "0"}, "/health", {}),
        # multi-node: ranks > 0 serve only SGLang's small health server
        ("0.5.23", {"SGLANG_ARGS": "--nnodes 2 --node-rank 1 --tp 16"}, "/health", {}),
        ("0.5.8", {"SGLANG_ARGS": "--nnodes 2 --node-rank 1 --tp 16"}, "/health", {}),
    ],
)  # fmt: skip
def test_ready_path_per_release(
    version: str | None, env: dict[str, str], path: str, server_env: dict[str, str]
) -> None:
    launch = _plan(version, env)
    assert launch.ready_path == path
    assert launch.env == server_env


# ---- the items, through the real command and a fake installed SGLang --------------


def _launch(
    tmp_path: Path, version: str, env: dict[str, str], parses_as: str | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """``python -m vastinit launch sglang`` with a fake SGLang ``version`` on PATH (its
    ``sglang`` script and package); returns the run and what the fake server parsed."""
    site, bin_dir = install_fake_sglang(tmp_path / f"sglang-{version}", version, parses_as)
    repo = str(Path(__file__).parents[2])
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_", "NOTIFY_SOCKET"))}
    full.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join([str(site), repo]),
            "SGLANG_MODEL": MODEL,
            "SGLANG_ARGS_FILE": str(tmp_path / "absent.conf"),
            "WORKSPACE": str(tmp_path / "ws"),
            "AUTO_PARALLEL": "false",
            **env,
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "vastinit", "launch", "sglang"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("STANDIN ")), None)
    return result, None if line is None else json.loads(line.removeprefix("STANDIN "))


def test_item2_model_type_llm_works_on_every_release(tmp_path: Path) -> None:
    """--model-type llm (docs/stack.md's advice) crash-looped before 0.5.10's `sglang serve`."""
    for version in ("0.5.6.post2", "0.5.8", "0.5.23"):
        result, seen = _launch(tmp_path, version, {"SGLANG_ARGS": "--model-type llm"})
        assert result.returncode == 0, (version, result.stderr)
        assert seen is not None and seen["model_path"] == MODEL
        # Before 0.5.10 the LLM server is launched directly (no Hub probe either).
        expected = "sglang serve" if version == "0.5.23" else "python -m sglang.launch_server"
        assert seen["entry"] == expected, version


def test_item3_config_equals_file_is_read(tmp_path: Path) -> None:
    """--config=FILE was ignored by SGLang while the launcher counted it as "tp given"."""
    (tmp_path / "c.yaml").write_text("tp-size: 2\nlog-level: warning\n")
    result, seen = _launch(
        tmp_path, "0.5.8", {"SGLANG_ARGS": f"--config={tmp_path / 'c.yaml'}", "AUTO_PARALLEL": "1"}
    )
    assert result.returncode == 0, result.stderr
    assert seen is not None
    assert (seen["tp_size"], seen["log_level"]) == (2, "warning")
    assert (seen["merged"], seen["config"]) == (str(tmp_path / "c.yaml"), None)


def test_item3_yaml_port_is_consulted(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("port: 9000\n")
    result, seen = _launch(tmp_path, "0.5.8", {"SGLANG_ARGS": f"--config {tmp_path / 'c.yaml'}"})
    assert result.returncode == 2 and seen is None
    assert "set SGLANG_SERVER_PORT=9000 instead" in result.stderr


def test_item4_a_second_model_path_is_refused(tmp_path: Path) -> None:
    """--model-path in SGLANG_ARGS silently replaced SGLANG_MODEL (argparse: last wins)."""
    result, seen = _launch(tmp_path, "0.5.8", {"SGLANG_ARGS": "--model other/model"})
    assert result.returncode == 2 and seen is None
    assert "sets the model path 'other/model' but SGLANG_MODEL is 'org/model'" in result.stderr


@pytest.mark.parametrize(
    ("sglang_args", "reason"),
    [
        ("--port 9000", "set SGLANG_SERVER_PORT=9000 instead"),
        ("--host 0.0.0.0", "set SGLANG_ALLOW_PUBLIC=true to mean it"),
    ],
)
def test_item5_port_and_host_the_edge_cannot_follow_are_refused(
    tmp_path: Path, sglang_args: str, reason: str
) -> None:
    result, seen = _launch(tmp_path, "0.5.8", {"SGLANG_ARGS": sglang_args})
    assert result.returncode == 2 and seen is None
    assert reason in result.stderr


def test_item5_the_port_setting_is_followed(tmp_path: Path) -> None:
    result, seen = _launch(tmp_path, "0.5.8", {"SGLANG_SERVER_PORT": "9000"})
    assert result.returncode == 0, result.stderr
    assert seen is not None and (seen["host"], seen["port"]) == ("127.0.0.1", 9000)


@pytest.mark.parametrize("version", VERSIONS)
def test_item6_abbreviations_count_as_given(tmp_path: Path, version: str) -> None:
    """--tens 2 / --ho X were not recognised: the launcher appended its own flag, which won."""
    env = {"SGLANG_ARGS": "--tens 2 --ho localhost --por 18000", "AUTO_PARALLEL": "true"}
    result, seen = _launch(tmp_path, version, env)
    assert result.returncode == 0, result.stderr
    assert seen is not None
    assert (seen["tp_size"], seen["host"], seen["port"]) == (2, "localhost", 18000)


def test_item6_ambiguous_pp_is_refused_as_sglang_would(tmp_path: Path) -> None:
    result, seen = _launch(tmp_path, "0.5.8", {"SGLANG_ARGS": "--pp 2"})
    assert result.returncode == 2 and seen is None
    assert "ambiguous option: --pp could match --pp-size" in result.stderr


def test_item6_a_release_without_fixture_passes_unknown_flags_with_a_warning(
    tmp_path: Path,
) -> None:
    """0.5.9 has no fixture: read with 0.5.8's, never refused for that alone."""
    env = {"SGLANG_ARGS": "--log-level warning"}
    result, seen = _launch(tmp_path, "0.5.9", env, parses_as="0.5.8")
    assert result.returncode == 0, result.stderr
    assert seen is not None and seen["version"] == "0.5.9"
    assert "no flag list for SGLang 0.5.9: read with 0.5.8's" in result.stderr


def test_item7_api_key_is_explained_at_start(tmp_path: Path) -> None:
    """A user --api-key made every request through the edge fail with 401, silently."""
    result, seen = _launch(tmp_path, "0.5.8", {"SGLANG_ARGS": "--api-key sk-user"})
    assert result.returncode == 0, result.stderr
    assert seen is not None and seen["api_key"] == "sk-user"
    assert "sglang.api_key" in result.stderr
    assert "Authorization: Bearer <api key>" in result.stderr
    assert "sk-user" not in result.stderr  # the key itself is never logged


def test_item1_old_release_health_is_made_a_flag_check(tmp_path: Path) -> None:
    """Readiness no longer waits for the INFO ready line: /health of 0.5.8 is made cheap."""
    result, seen = _launch(tmp_path, "0.5.8", {"SGLANG_ARGS": "--log-level warning"})
    assert result.returncode == 0, result.stderr
    assert seen is not None and seen["log_level"] == "warning"
    printed = next(x for x in result.stdout.splitlines() if "--model-path" in x)
    assert printed.startswith("SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=false ")


# ---- the real SGLang parser -------------------------------------------------------------------

_REAL_REASON = (
    "the sglang package is not importable here (CI never installs it: it needs torch); "
    "run with VASTINIT_TEST_SGLANG=DIR (a `pip install --no-deps --target DIR sglang==X "
    "msgspec`) to use tools/sglang_flags.py's torch stub"
)


def _real_sglang() -> Any:
    """SGLang's real ``server_args`` module, or None."""
    target = os.environ.get("VASTINIT_TEST_SGLANG")
    if target:
        tools = str(Path(__file__).parents[2] / "tools")
        sys.path[:0] = [target, tools]
        import sglang_flags  # the generator: installs its stub finder

        sys.meta_path.insert(0, sglang_flags._StubFinder())
    elif importlib.util.find_spec("sglang") is None:
        return None
    try:
        from sglang.srt import server_args  # type: ignore[import-not-found]
    except Exception:
        return None
    return server_args


@pytest.mark.parametrize(
    ("sglang_args", "yaml"),
    [
        ("--tens 2 --ho localhost --por 18000", None),
        ("--config=CONFIG --log-level warning", "tp-size: 2\nhost: 127.0.0.1\n"),
        ("--model-path org/model --enable-metrics", None),
        ("", None),
    ],
)
def test_real_sglang_parser_reads_the_launchers_argv(
    tmp_path: Path, sglang_args: str, yaml: str | None
) -> None:
    server_args = _real_sglang()
    if server_args is None:
        pytest.skip(_REAL_REASON)
    from sglang.version import __version__ as version  # type: ignore[import-not-found]

    if yaml is not None:
        (tmp_path / "c.yaml").write_text(yaml)
        sglang_args = sglang_args.replace("CONFIG", str(tmp_path / "c.yaml"))
    launch = _plan(version, {"SGLANG_ARGS": sglang_args})
    argv = _server_args(launch)
    # prepare_server_args up to the parse (from_cli_args resolves against a GPU and model).
    parser = server_args.argparse.ArgumentParser()
    server_args.ServerArgs.add_cli_args(parser)
    if "--config" in argv:
        try:
            from sglang.srt.server_args_config_parser import ConfigArgumentMerger
        except ImportError:
            from sglang.srt.utils.server_args_config_parser import ConfigArgumentMerger
        argv = ConfigArgumentMerger(parser).merge_config_with_args(argv)
    raw = vars(parser.parse_args(argv))
    mine = sglang_parse(version, _server_args(launch)) if version in VERSIONS else None
    tp = raw.get("tp_size", raw.get("tensor_parallel_size"))
    assert (raw["model_path"], raw["port"]) == (MODEL, 18000)
    assert raw["host"] in ("127.0.0.1", "localhost")
    if mine is not None:  # the fixture's rebuilt parser agrees with the real one
        assert (tp, raw["host"], raw["log_level"]) == (
            mine["tp_size"],
            mine["host"],
            mine["log_level"] or "info",  # the fixture has no defaults
        )


@pytest.mark.parametrize("version", ["0.5.8", "0.5.23"])
def test_a_long_health_check_timeout_asks_for_a_longer_liveness_timeout(version: str) -> None:
    with structlog.testing.capture_logs() as logs:
        _plan(version, {"SGLANG_HEALTH_CHECK_TIMEOUT": "60"})
    [event] = [e for e in logs if e["event"] == "sglang.health_timeout"]
    assert "at least 70s" in event["note"]


def test_portal_config_without_a_route_to_the_port_is_warned_about() -> None:
    with structlog.testing.capture_logs() as logs:
        _plan("0.5.8", {"PORTAL_CONFIG": "localhost:8000:18001:/:API"})
    assert [e["port"] for e in logs if e["event"] == "sglang.not_routed"] == [18000]
    with structlog.testing.capture_logs() as logs:
        _plan("0.5.8", {"PORTAL_CONFIG": "localhost:8000:18000:/:API"})
    assert not [e for e in logs if e["event"] == "sglang.not_routed"]
