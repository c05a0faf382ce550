"""Readiness and liveness probes: http, tcp, exec, log lines and the sd_notify protocol."""

from __future__ import annotations

from vastinit.health.hooks import setup_runner

__all__ = ["setup_runner"]
