"""plantops benchmarks: `make bench` (``python -m bench.run``) measures side by side in one run.

See ``bench/run.py`` for the figures and their budgets; the results land in ``bench/results.json``
and, summarised, in docs/benchmarks.md.
"""
