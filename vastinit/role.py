"""Box or workstation (SPEC §4.3): whether vastinit may touch the host's files.

Everything that touches the host — ``/etc/portal.yaml``, ``/etc/supervisor`` INI files,
crontabs, ``/etc/environment`` — happens only in the **box** role: the default when vastinit
is PID 1, or ``/.launch`` or ``VAST_CONTAINERLABEL`` is present; otherwise the
**workstation** role. ``VASTINIT_ROLE=box|workstation`` overrides. ``vastinit run``
decides once and puts the answer in its units' environment as ``VASTINIT_ROLE``, so the
programs it starts (``vastinit caddyfile``) agree with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ROLE_ENV = "VASTINIT_ROLE"
LAUNCH_FILE_ENV = "VASTINIT_LAUNCH_FILE"  # tests: where "/.launch" is looked for


def box_role(environ: Mapping[str, str] | None = None, *, pid1: bool | None = None) -> bool:
    """True in the box role (see the module doc); ``pid1`` defaults to "this process is 1"."""
    env = os.environ if environ is None else environ
    role = env.get(ROLE_ENV, "").strip().lower()
    if role in ("box", "workstation"):
        return role == "box"
    if (os.getpid() == 1) if pid1 is None else pid1:
        return True
    return bool(env.get("VAST_CONTAINERLABEL")) or os.path.exists(
        env.get(LAUNCH_FILE_ENV) or "/.launch"
    )


def role_name(environ: Mapping[str, str] | None = None, *, pid1: bool | None = None) -> str:
    return "box" if box_role(environ, pid1=pid1) else "workstation"
