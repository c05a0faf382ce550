"""Probe outcomes as a person wants to read them: each distinct failure logged once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vastinit.config.values import format_duration


class ProbeErrors:
    """The current error of each probe role (readiness, liveness), published as one text
    (``readiness: connection refused``) or None when every probe passes."""

    def __init__(self, publish: Callable[[str | None], None]) -> None:
        self._publish = publish
        self._errors: dict[str, str] = {}

    def get(self, role: str) -> str | None:
        return self._errors.get(role)

    def set(self, role: str, error: str | None) -> None:
        """Record ``role``'s error (None: it passed) and publish the combined text."""
        if error is None:
            self._errors.pop(role, None)
        else:
            self._errors[role] = error
        text = "; ".join(f"{r}: {e}" for r, e in sorted(self._errors.items()))
        self._publish(text or None)


class ProbeLog:
    """Logs one probe's outcomes without repeating itself: a failure when its text differs
    from the last one logged, a pass when it ends a failure (or, with ``announce_first``,
    the first pass)."""

    def __init__(
        self, log: Any, role: str, probe: str, errors: ProbeErrors, *, announce_first: bool
    ) -> None:
        self._log = log
        self._role = role
        self._probe = probe
        self._errors = errors
        self._announce = announce_first
        self._last_error: str | None = None
        self._passed_before = False
        self.failures = 0  # consecutive

    @property
    def last_error(self) -> str | None:
        """The error of the last attempt, None if it passed (or none was made)."""
        return self._last_error

    def failed(self, error: str, *, level: str = "info", **kw: Any) -> None:
        """Record a failed attempt; logged at ``level`` when the error text is new."""
        self.failures += 1
        self._errors.set(self._role, error)
        if error != self._last_error:
            self._last_error = error
            getattr(self._log, level)(
                f"{self._role} probe failed", probe=self._probe, error=error, **kw
            )

    def passed(self, result: str, took: float | None = None, **kw: Any) -> None:
        """Record a passing attempt (``took``: how long the attempt itself lasted)."""
        was_failing = self._last_error is not None
        again, self._passed_before = self._passed_before, True
        self.failures = 0
        self._last_error = None
        self._errors.set(self._role, None)
        if was_failing or (self._announce and not again):
            if took is not None:
                kw["took"] = format_duration(took)
            event = f"{self._role} probe passed" + (" again" if again else "")
            self._log.info(event, probe=self._probe, result=result, **kw)
