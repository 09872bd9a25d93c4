"""The sweep: ``sweep`` (tune: compress and benchmark every candidate, pick the one that meets the budget),
``space`` (budget, search space, candidates), ``trial`` (what a candidate measured), ``selection`` (which
trial is chosen), ``report`` (the result and its report), ``cache`` (finished trials, content-addressed),
``executors`` (where trials run: in process, in worker processes, on Ray). Above build and benchmarks.
"""

from __future__ import annotations

from .sweep import Budget, Candidate, SearchSpace, Trial, TuneResult, select, tune

__all__ = ["Budget", "Candidate", "SearchSpace", "Trial", "TuneResult", "select", "tune"]
