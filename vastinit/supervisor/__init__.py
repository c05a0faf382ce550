"""The supervisor: one state machine per unit, the manager of all units, PID-1 duties."""
