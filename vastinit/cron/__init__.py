"""Cron units: ``expression`` (cron syntax and fire times), ``scheduler`` (timers that survive
clock jumps) and ``runner`` (a cron unit in the running engine, a plug-in like ``health``).

Nothing is imported here, so ``config`` can use ``cron.expression`` without the engine parts.
"""
