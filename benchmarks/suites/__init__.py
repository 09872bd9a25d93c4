"""Runnable benchmark suites (``python -m edgeship.benchmarks.suites.<name>``): each measures and prints a
table with ratios against a baseline run in the same process. Applications of the public API and of the
``benchmarks`` library; nothing imports them.
"""
