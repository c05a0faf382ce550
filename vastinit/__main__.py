"""``python -m vastinit``."""

from __future__ import annotations

from vastinit.cli import main

raise SystemExit(main())
