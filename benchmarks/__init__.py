"""The benchmarks, a package run from the repository's root: ``python -m benchmarks.sfu_bench``.
Their shared helpers are the project's own (``clients.loadtest.process``: ports, pinning, CPU
time, child processes; ``clients.loadtest.stats``: medians; ``clients.loadtest.polling``: waiting
for a condition), so no benchmark puts anything on ``sys.path``."""
