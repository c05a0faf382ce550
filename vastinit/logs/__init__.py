"""Log multiplexing: every unit line to the console, the unit's file and an in-memory ring."""

from __future__ import annotations

from vastinit.logs.console import ConsoleSink
from vastinit.logs.line import LogLine
from vastinit.logs.mux import LogMux, UnitLog
from vastinit.logs.pump import Pump
from vastinit.logs.ring import LogSubscription

__all__ = ["ConsoleSink", "LogLine", "LogMux", "LogSubscription", "Pump", "UnitLog"]
