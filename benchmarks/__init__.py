"""vastinit against supervisord, side by side: ``python -m benchmarks`` (``make bench``)."""
