"""Each validation rule, one bad unit file at a time: the problem, its FILE:LINE, no others."""

from __future__ import annotations

from pathlib import Path

import pytest

from vastinit.config import load_units
from vastinit.errors import ConfigError

CMD = 'command = ["true"]\n'
CRON = 'type = "cron"\ncommand = ["true"]\n[schedule]\n'
READY = '[readiness]\nlog = "ok"\n'


def problems_of(tmp_path: Path, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_units([tmp_path])
    return [str(p) for p in info.value.problems]


# (file text, line of the problem, a fragment of its message)
CASES = [
    # unknown keys, at every level, with a suggestion when one is close
    (CMD + 'descriptoin = "x"\n', 2, "unknown key 'descriptoin' (did you mean 'description'?)"),
    (CMD + "bogus = 1\n", 2, "unknown key 'bogus'"),
    (CMD + READY + 'intervall = "2s"\n', 4, "'readiness.intervall' (did you mean 'interval'?)"),
    (CMD + '[restart]\npolcy = "always"\n', 3, "'restart.polcy' (did you mean 'policy'?)"),
    (CMD + "[condition]\nenv_set = []\n", 3, "unknown key 'condition.env_set'"),
    (
        CMD + "[[expose]]\nport = 1\ntarget = 2\nprt = 3\n",
        5,
        "'expose[0].prt' (did you mean 'port'?)",
    ),
    (CMD + "[liveness]\nstart_timeout = 1\nhttp = 'http://h/'\n", 3, "'liveness.start_timeout'"),
    # wrong types name the expected type
    ("command = 5\n", 1, "command: expected an argv array or a shell string, got integer 5"),
    (CMD + 'enabled = "yes"\n', 2, "enabled: expected a boolean (true or false), got string 'yes'"),
    (CMD + "description = []\n", 2, "description: expected a string, got an array"),
    (CMD + "user = 0\n", 2, "user: expected a string, got integer 0"),
    (CMD + 'readiness = "x"\n', 2, "readiness: expected a table ([readiness]), got string 'x'"),
    (CMD + "env_files = '/x'\n", 2, "env_files: expected an array of strings, got string '/x'"),
    (CMD + "env_files = [1]\n", 2, "env_files[0]: expected a string, got integer 1"),
    (CMD + "expose = 1\n", 2, "expose: expected [[expose]] tables"),
    # command
    ("command = []\n", 1, "command must not be empty"),
    ("command = ['']\n", 1, "command must not be empty"),
    ('command = "  "\n', 1, "command must not be empty"),
    ('command = ["a", 1]\n', 1, "command[1]: expected a string, got integer 1"),
    ('description = "no command"\n', 1, "command is missing"),
    # enums list the allowed values
    (CMD + 'type = "daemon"\n', 2, "type: 'daemon' is not one of service | oneshot | cron"),
    (CMD + '[restart]\npolicy = "on-falure"\n', 3, "(did you mean 'on-failure'?)"),
    (CMD + '[stop]\nmode = "all"\n', 3, "stop.mode: 'all' is not one of group | main"),
    (CRON + 'cron = "@daily"\noverlap = "queue"\n', 5, "'queue' is not one of skip | allow"),
    (CMD + '[depends_on]\nd = "up"\n', 3, "depends_on.d: 'up' is not one of started | ready |"),
    (CMD + 'depends_on = ["x"]\n', 2, 'depends_on: expected a table such as { provisioning = "ex'),
    # durations and sizes
    (CMD + READY + 'interval = "2 s"\n', 4, "readiness.interval: bad duration '2 s'"),
    (CMD + '[restart]\ndelay = "soon"\n', 3, "restart.delay: bad duration 'soon'"),
    (CMD + READY + 'timeout = "0s"\n', 4, "readiness.timeout: must be longer than 0"),
    (CMD + "[restart]\nwindow = true\n", 3, "restart.window: expected a duration such as"),
    (CMD + '[stop]\ntimeout = "-1s"\n', 3, "stop.timeout: bad duration '-1s'"),
    (CMD + '[restart]\ndelay = "1m"\nmax_delay = "1s"\n', 4, "max_delay must not be shorter"),
    (CMD + '[log]\nmax_size = "10 parsecs"\n', 3, "log.max_size: bad size '10 parsecs'"),
    (CMD + "[log]\nmax_size = 0\n", 3, "log.max_size must be at least 1 byte"),
    (CMD + "[log]\nmax_size = 1.5\n", 3, "log.max_size: expected a size such as"),
    (CMD + "[log]\nkeep = -1\n", 3, "log.keep: -1 is out of range (must be >= 0)"),
    (CMD + "[restart]\nlimit = -1\n", 3, "restart.limit: -1 is out of range (must be >= 0)"),
    # signals
    (
        CMD + '[stop]\nsignal = "SIGTREM"\n',
        3,
        "stop.signal: unknown signal 'SIGTREM'; did you mean",
    ),
    (CMD + "[stop]\nsignal = 99\n", 3, "stop.signal: bad signal number 99"),
    (CMD + "[stop]\nsignal = true\n", 3, "stop.signal: expected a signal name or number"),
    # dependencies
    (CMD + '[depends_on]\nprovisoning = "exited"\n', 3, "unknown unit 'provisoning'"),
    (CMD + '[depends_on]\nu = "started"\n', 3, "depends_on.u: a unit cannot depend on itself"),
    # readiness and liveness
    (
        CMD + "[readiness]\ninterval = 1\n",
        2,
        "[readiness] must name exactly one of log, http, tcp, ",
    ),
    (
        CMD + READY + 'tcp = "h:1"\n',
        2,
        "exactly one of log, http, tcp, exec, notify (found log, tcp)",
    ),
    (CMD + "[readiness]\nnotify = false\n", 2, "(found none)"),
    (CMD + '[readiness]\nlog = "("\n', 3, "readiness.log: invalid regular expression '('"),
    (CMD + '[readiness]\nlog = ""\n', 3, "readiness.log: must not be empty"),
    (CMD + '[readiness]\ntcp = "localhost"\n', 3, "expected host:port (e.g. 127.0.0.1:8000)"),
    (CMD + '[readiness]\ntcp = "h:99999"\n', 3, "readiness.tcp: expected host:port"),
    (CMD + '[readiness]\nhttp = "ftp://h/"\n', 3, "expected an http:// or https:// URL"),
    (CMD + '[readiness]\nhttp = "http:///x"\n', 3, "URL 'http:///x' has no host"),
    (CMD + "[readiness]\nexec = []\n", 3, "readiness.exec: expected a non-empty argv array"),
    (CMD + '[readiness]\nexec = "test -f x"\n', 3, "readiness.exec: expected an array of strings"),
    (CMD + '[readiness]\nnotify = "yes"\n', 3, "readiness.notify: expected a boolean"),
    (CMD + '[liveness]\nlog = "x"\n', 3, "liveness.log: log probes are for readiness only"),
    (CMD + '[liveness]\nhttp = "http://h/"\nfailures = 0\n', 4, "liveness.failures: 0 is out of"),
    (CMD + "[liveness]\ntimeout = 1\n", 2, "[liveness] must name exactly one of http, tcp, exec"),
    # cron units
    (CMD + 'type = "cron"\n', 2, 'type = "cron" needs a [schedule] table'),
    (CMD + '[schedule]\ncron = "@daily"\n', 2, '[schedule] is only for type = "cron" units'),
    (CRON + 'timezone = "UTC"\n', 3, "[schedule] needs cron ="),
    (CRON + 'cron = "* * *"\n', 4, "schedule.cron: invalid cron expression '* * *'"),
    (CRON + 'cron = "0 0 30 2 *"\n', 4, "schedule.cron: cron expression '0 0 30 2 *' never fires"),
    (CRON + 'cron = "@daily"\ntimezone = "Mars/Base"\n', 5, "unknown time zone 'Mars/Base'"),
    # [[expose]]
    (
        CMD + "[[expose]]\nport = 0\ntarget = 1\n",
        3,
        "expose[0].port: 0 is out of range (must be 1..65535)",
    ),
    (CMD + "[[expose]]\nport = 1\ntarget = 70000\n", 4, "expose[0].target: 70000 is out of range"),
    (CMD + '[[expose]]\nport = "80"\ntarget = 1\n', 3, "expose[0].port: expected an integer"),
    (CMD + "[[expose]]\nport = 1\n", 2, "expose[0]: target is missing"),
    (CMD + '[[expose]]\nport = 1\ntarget = 2\npath = "docs"\n', 5, "path: must start with '/'"),
    (
        CMD + "[[expose]]\nport = 1\ntarget = 2\nlabel = 1\n",
        5,
        "expose[0].label: expected a string",
    ),
    (
        CMD + '[[expose]]\nport = 1\ntarget = 2\nauth = "no"\n',
        5,
        "expose[0].auth: expected a boolean",
    ),
    (
        CMD + '[[expose]]\nport = 1\ntarget = 2\npass_credentials = "yes"\n',
        5,
        "expose[0].pass_credentials: expected a boolean",
    ),
    (
        CMD + "[[expose]]\nport = 80\ntarget = 2\n[[expose]]\nport = 80\ntarget = 3\n",
        6,
        "expose[1].port: port 80 is exposed twice",
    ),
    # environment and conditions
    (CMD + "environment = { A-B = '1' }\n", 2, "environment: invalid variable name 'A-B'"),
    (
        CMD + "[environment]\nPORT = 8000\n",
        3,
        "environment.PORT: expected a string, got integer 8000 (quote",
    ),
    (CMD + "environment = 'A=1'\n", 2, "environment: expected a table"),
    (CMD + '[condition]\nenv = "X"\n', 3, "condition.env: expected an array of strings"),
    (CMD + '[condition]\nenv = ["1X"]\n', 3, "condition.env: invalid variable name '1X'"),
    (CMD + 'restart_on_env = "FOO"\n', 2, "restart_on_env: expected an array of strings"),
    (CMD + 'restart_on_env = ["FOO", "A-B"]\n', 2, "restart_on_env: invalid variable name 'A-B'"),
    (CMD + 'restart_on_env = ["**"]\n', 2, "restart_on_env: invalid variable name '**'"),
    (CMD + 'restart_on_env_ = ["A"]\n', 2, "(did you mean 'restart_on_env'?)"),
    (
        'type = "cron"\ncommand = ["true"]\nrestart_on_env = ["A"]\n'
        '[schedule]\ncron = "* * * * *"\n',
        3,
        "restart_on_env: a cron unit reads its environment at every run",
    ),
    (CMD + "[condition]\npath_exists = [1]\n", 3, "condition.path_exists[0]: expected a string"),
    (CMD + "[condition]\npath_missing = 'x'\n", 3, "condition.path_missing: expected an array"),
    # malformed templates wherever templates are allowed
    ('command = ["echo", "${X"]\n', 1, "command[1]: bad template '${X' at column 1"),
    ('command = "echo ${1}"\n', 1, "command: bad template 'echo ${1}' at column 6"),
    (CMD + 'working_dir = "${W:-/w"\n', 2, "working_dir: bad template"),
    (CMD + 'working_dir = ""\n', 2, "working_dir: must not be empty"),
    (CMD + '[environment]\nA = "${B-x}"\n', 3, "environment.A: bad template '${B-x}'"),
    (CMD + 'env_files = ["${HOME/.env"]\n', 2, "env_files[0]: bad template"),
    (CMD + '[log]\nfile = "${NAME.log"\n', 3, "log.file: bad template"),
    (CMD + '[readiness]\nhttp = "${URL"\n', 3, "readiness.http: bad template"),
    (CMD + '[liveness]\nexec = ["test", "${"]\n', 3, "liveness.exec[1]: bad template"),
    (CMD + '[condition]\npath_exists = ["${WS/x"]\n', 3, "condition.path_exists[0]: bad template"),
    (CMD + '[condition]\npath_missing = ["${}"]\n', 3, "condition.path_missing[0]: bad template"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), CASES)
def test_bad_unit_reports_one_problem_at_its_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    found = problems_of(tmp_path, {"u": text, "d": CMD})  # d: a unit to depend on
    assert len(found) == 1, found
    prefix = f"{tmp_path / 'u.toml'}:{line}: unit u: "
    assert found[0].startswith(prefix), found[0]
    assert fragment in found[0]


GOOD = [
    CMD + '[readiness]\ntcp = "${HOST:-127.0.0.1}:${PORT}"\n',  # shape checked after expansion
    CMD + '[readiness]\nhttp = "${URL}"\n',
    CMD + '[readiness]\nexec = ["test", "-S", "/run/x.sock"]\n',
    CMD + "[readiness]\nnotify = true\n",
    CMD + '[readiness]\nhttp = "https://[::1]:8443/health"\nnotify = false\n',
    CMD + '[liveness]\ntcp = "[::1]:22"\ninterval = 5\n',
    CMD + '[log]\nfile = ""\nmax_size = 4096\n',
    CMD + "[stop]\nsignal = 2\ntimeout = 0\n",
    CRON + 'cron = "*/5 * * * *"\ntimezone = "Europe/Berlin"\nrun_on_start = true\n',
    'type = "oneshot"\ncommand = "echo $HOME $$"\n[condition]\nenv = ["HOME"]\n',
    CMD + "[[expose]]\nport = 9000\ntarget = 19000\npass_credentials = true\n",
    CMD + 'restart_on_env = ["FOO", "_BAR2"]\n',
    CMD + 'restart_on_env = ["*"]\n',
    CMD + "restart_on_env = []\n",
]


@pytest.mark.parametrize("text", GOOD)
def test_valid_unit_loads(tmp_path: Path, text: str) -> None:
    (tmp_path / "u.toml").write_text(text)
    assert list(load_units([tmp_path])) == ["u"]


def test_cycle_is_named_once(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path,
        {
            "a": CMD + '[depends_on]\nb = "ready"\n',
            "b": CMD + '[depends_on]\nc = "ready"\n',
            "c": CMD + '[depends_on]\na = "ready"\nd = "ready"\n',
            "d": CMD,
        },
    )
    assert found == [f"{tmp_path / 'a.toml'}:3: unit a: dependency cycle: a -> b -> c -> a"]


def test_self_dependency_is_not_also_a_cycle(tmp_path: Path) -> None:
    found = problems_of(tmp_path, {"a": CMD + '[depends_on]\na = "ready"\n'})
    assert found == [
        f"{tmp_path / 'a.toml'}:3: unit a: depends_on.a: a unit cannot depend on itself"
    ]


def test_two_units_exposing_one_port_are_both_named(tmp_path: Path) -> None:
    expose = "[[expose]]\nport = 8000\ntarget = {}\n"
    found = problems_of(
        tmp_path,
        {"sglang": CMD + expose.format(18000), "vllm": CMD + expose.format(18001)},
    )
    assert found == [
        f"{tmp_path / 'vllm.toml'}:3: unit vllm: expose[0].port: "
        "port 8000 is exposed by both sglang and vllm"
    ]


def test_disabled_unit_does_not_claim_its_port(tmp_path: Path) -> None:
    expose = "[[expose]]\nport = 8000\ntarget = 1\n"
    (tmp_path / "a.toml").write_text(CMD + "enabled = false\n" + expose)
    (tmp_path / "b.toml").write_text(CMD + expose)
    assert sorted(load_units([tmp_path])) == ["a", "b"]


def test_all_problems_of_one_file_are_reported_together(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path,
        {"u": 'command = []\ntype = "x"\n[restart]\nlimit = -1\n[depends_on]\nzzz = "ready"\n'},
    )
    assert [f.split(": unit u: ")[0].rsplit(":", 1)[1] for f in found] == ["1", "2", "4", "6"]


def test_expose_pass_credentials_defaults_to_false(tmp_path: Path) -> None:
    text = "[[expose]]\nport = 9000\ntarget = 1\npass_credentials = true\n"
    (tmp_path / "u.toml").write_text(CMD + text + "[[expose]]\nport = 9001\ntarget = 2\n")
    unit = load_units([tmp_path])["u"]
    assert [e.pass_credentials for e in unit.expose] == [True, False]
