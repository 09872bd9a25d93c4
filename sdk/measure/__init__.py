"""Measurement, the ground floor every stage may use: latency (``latency``), order-statistic and bootstrap
intervals (``stats``), classification metrics (``metrics``) and paired fidelity tests (``fidelity``).

Pure numpy; it imports nothing else of edgeship but ``errors``. Backends time their own candidates with it,
the self-test holds artifacts to it, and ``benchmarks`` builds its reports from it.
"""
