"""Line numbers of TOML keys."""

from __future__ import annotations

import pytest

from vastinit.config.locate import KeyPath, Locator

DOC = """\
description = "x"            # 1
command = [                  # 2
  "a",
  "b = c",                   # 4: inside the array, not a key
]
text = \"\"\"
port = 1                     # 7: inside a multi-line string
\"\"\"
environment = { HOME = "/" } # 9
readiness.log = "ready"      # 10

[restart]                    # 12
delay = "1s"                 # 13
"quoted key" = 1             # 14

[[expose]]                   # 16
port = 8000                  # 17

[[expose]]                   # 19
port = 9000                  # 20

[ stop ]                     # 22
  timeout = "5s"             # 23
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("description",), 1),
        (("command",), 2),
        (("command", 1), 2),
        (("text",), 6),
        (("port",), 1),  # only ever inside a string: not found, line 1
        (("environment",), 9),
        (("environment", "HOME"), 9),
        (("readiness",), 10),
        (("readiness", "log"), 10),
        (("restart",), 12),
        (("restart", "delay"), 13),
        (("restart", "quoted key"), 14),
        (("restart", "policy"), 12),  # absent key: its table's header
        (("expose",), 16),
        (("expose", 0, "port"), 17),
        (("expose", 1), 19),
        (("expose", 1, "port"), 20),
        (("expose", 1, "label"), 19),
        (("stop", "timeout"), 23),
        (("nothing",), 1),
    ],
)
def test_locator_finds_the_defining_line(path: KeyPath, line: int) -> None:
    assert Locator(DOC).line(path) == line
