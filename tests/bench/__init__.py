"""``make bench``: latency, pacing, barge-in, capacity and soak figures of the module in a real Asterisk.

Run with ``make bench`` (or ``CONVAI_TESTBED_ROOT=<root> python -m tests.bench``); see ``__main__`` for
the environment overrides. Modules: ``bed`` (the sandboxed Asterisk, dialplan, sounds, /proc),
``simproc`` (the simulator in its own process), ``scenarios`` (the runs), ``analysis`` and ``figures``
(numbers from the module's AMI figures, the simulator's records and the recordings), ``report`` and
``explain`` (BENCHMARKS.md).
"""
