"""vastinit's own events (structlog): one line each, secrets masked, through the console sink.

Text format: ``vastinit | event key=value ...`` (the prefix padded like unit lines, and a
``warning:``/``error:`` tag above info); JSON format: one object per line with ``ts``,
``unit`` ("vastinit", or the unit the event is about), ``level``, ``event`` and the event's
keys.  Library code calls
``structlog.get_logger()``; only ``configure_structlog`` decides where lines go.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import structlog

from vastinit.logs.console import SELF, ConsoleSink

MASK = "***"
_SECRET_KEY = re.compile(r"token|password|passwd|secret|api[-_]?key|credential", re.IGNORECASE)
_QUIET_LEVELS = frozenset({"info", "debug"})  # levels shown without a tag in text format
_BARE = re.compile(r"[^\s\"'=\\]+")


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def _mask_value(value: Any) -> Any:
    """``value`` with secrets inside it masked: dict entries by key, argv flags by name."""
    if isinstance(value, Mapping):
        return {k: (MASK if _is_secret_key(k) and v else _mask_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        out: list[str] = []
        hide_next = False
        for arg in value:
            if hide_next:
                out.append(MASK)
                hide_next = False
                continue
            flag, eq, _ = arg.partition("=")
            if _is_secret_key(flag):
                if eq:  # --api-key=VALUE, HF_TOKEN=VALUE
                    arg = f"{flag}={MASK}"
                elif flag.startswith("-"):  # --api-key VALUE
                    hide_next = True
            out.append(arg)
        return out
    return value


def mask_secrets(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: mask values of keys naming a token, password or secret."""
    for key, value in list(event_dict.items()):
        if key == "event":
            continue
        if _is_secret_key(key) and value:
            event_dict[key] = MASK
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = _mask_value(value)
    return event_dict


def _text_value(value: Any) -> str:
    """A value as ``key=value`` shows it: bare when unambiguous, JSON-quoted otherwise."""
    if isinstance(value, str):
        return value if _BARE.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def _text_renderer(prefix: Callable[[], str]) -> Callable[..., str]:
    def render(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> str:
        event = str(event_dict.pop("event", "")).replace("\n", "\\n")
        level = str(event_dict.pop("level", "info"))
        event_dict.pop("timestamp", None)
        parts = [event] if level in _QUIET_LEVELS else [f"{level}:", event]
        parts.extend(f"{k}={_text_value(v)}" for k, v in event_dict.items())
        return prefix() + " ".join(parts)

    return render


def _json_renderer(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> str:
    record: dict[str, Any] = {
        "ts": round(time.time(), 3),
        "unit": SELF,
        "level": event_dict.pop("level", "info"),
        "event": event_dict.pop("event", ""),
    }
    event_dict.pop("timestamp", None)
    # An event about a unit (unit=NAME) carries that name in "unit", so filtering on a unit
    # gets its lines and its lifecycle; events have "event", output lines have "line".
    record.update(event_dict)
    return json.dumps(record, default=str, ensure_ascii=False)


class _LineLogger:
    """structlog's final logger: hands each rendered line to the console (or stderr)."""

    def __init__(self, console: ConsoleSink | None) -> None:
        self._console = console

    def msg(self, message: str) -> None:
        if self._console is not None:
            self._console.write_event(message)
        else:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


class _StdlibBridge(logging.Handler):
    """Sends records of stdlib loggers (asyncio, aiohttp) through the same structlog pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = structlog.get_logger(record.name)
            kw: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                kw["exc_info"] = record.exc_info
            log.log(record.levelno, record.getMessage(), **kw)
        except Exception:
            self.handleError(record)


def configure_structlog(console: ConsoleSink | None, fmt: str, *, level: str = "info") -> None:
    """Render every structlog event as one line (``fmt`` "text" or "json") to ``console``.

    With ``console`` None the lines go to stderr (for CLI tools).  Values of keys that name a
    token, password or secret are replaced by ``***``.  Stdlib logging is bridged in too.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    if fmt == "json":
        renderer: Callable[..., str] = _json_renderer
    elif console is not None:
        renderer = _text_renderer(console.event_prefix)
    else:
        renderer = _text_renderer(lambda: f"{SELF} | ")
    levelno = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            mask_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=lambda *_args: _LineLogger(console),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers[:] = [_StdlibBridge()]
    root.setLevel(max(levelno, logging.WARNING))
