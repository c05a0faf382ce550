"""The applications list (SPEC §4.4): ``/etc/portal.yaml`` when it exists, else
``PORTAL_CONFIG`` — the previous image's precedence, kept.

In the box role the first ``vastinit caddyfile --run`` writes ``/etc/portal.yaml`` from
``PORTAL_CONFIG`` (atomically, 0644) when it is absent; from then on the file is the list,
edited by hand or by tools that know the previous image, and a ``PORTAL_CONFIG`` that
differs from it is a warning, never applied silently. In the workstation role the file is
never read or written. ``VASTINIT_PORTAL_YAML`` names another file (tests).

The file's format is the previous image's: ``applications:`` mapping each label to
``hostname``, ``external_port``, ``internal_port``, ``open_path`` and ``name``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
import yaml

from vastinit.role import box_role
from vastinit.stack.common import StackError
from vastinit.stack.routes import Route, default_portal_config, parse_portal_config

log = structlog.get_logger("vastinit.stack.portal_yaml")

PORTAL_YAML = "/etc/portal.yaml"
MAX_BYTES = 1 << 20


def portal_yaml_path(env: Mapping[str, str]) -> Path:
    return Path(env.get("VASTINIT_PORTAL_YAML") or PORTAL_YAML)


def applications(env: Mapping[str, str], *, seed: bool = False) -> list[Route]:
    """The routes of the applications list for the caddy unit's ``env``. ``seed``: write
    the file from ``PORTAL_CONFIG`` when it is absent (box role; the caddy unit's start)."""
    text = env.get("PORTAL_CONFIG") or default_portal_config(env)
    from_env = parse_portal_config(text)
    if not box_role(env, pid1=False):
        return from_env
    path = portal_yaml_path(env)
    try:
        from_file = read_portal_yaml(path)
    except FileNotFoundError:
        if seed:
            _write(path, from_env)
        return from_env
    if from_file is None:  # present but empty: the previous image's placeholder
        return from_env
    if env.get("PORTAL_CONFIG") and _key(from_file) != _key(from_env):
        log.warning(
            "portal.yaml_differs",
            file=str(path),
            note="the file is the applications list; PORTAL_CONFIG is only its first-boot "
            "seed (delete the file to seed it again)",
        )
    return from_file


def read_portal_yaml(path: Path) -> list[Route] | None:
    """The routes in a portal.yaml; None when it is empty; StackError naming the file and
    what is wrong; FileNotFoundError when there is none."""
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise StackError(f"{path}: larger than {MAX_BYTES} bytes")
    if not data.strip():
        return None
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise StackError(f"{path}: not valid YAML: {exc}") from None
    apps = doc.get("applications") if isinstance(doc, dict) else None
    if not isinstance(apps, dict):
        raise StackError(f"{path}: expected a mapping 'applications: {{LABEL: {{...}}}}'")
    if not apps:
        return None
    entries = []
    for label, app in apps.items():
        if not isinstance(app, dict):
            raise StackError(f"{path}: application {label!r} is not a mapping")
        fields = [app.get(k, "") for k in ("hostname", "external_port", "internal_port")]
        entries.append(":".join([*map(str, fields), str(app.get("open_path", "/")), str(label)]))
    try:
        return parse_portal_config("|".join(entries))
    except StackError as exc:
        raise StackError(f"{path}: {exc}") from None


def _key(routes: list[Route]) -> list[tuple[str, int, int, str, str]]:
    return sorted((r.host, r.port, r.target, r.path, r.label) for r in routes)


def _write(path: Path, routes: list[Route]) -> None:
    apps: dict[str, Any] = {
        r.label: {
            "hostname": r.host,
            "external_port": r.port,
            "internal_port": r.target,
            "open_path": r.path,
            "name": r.label,
        }
        for r in routes
    }
    text = yaml.safe_dump({"applications": apps}, sort_keys=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # whatever the umask: every unit and the portal read it
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning("portal.yaml_not_written", file=str(path), error=str(exc))
        return
    log.info("portal.yaml_written", file=str(path), applications=len(apps))
