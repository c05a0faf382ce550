"""Processes: spawning in their own session, the one reaper, process-group control."""
