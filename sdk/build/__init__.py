"""The build machine's flow, in order: ``recipe`` (what to make) -> ``prune`` (structured pruning with
distillation recovery) -> ``export`` (torch -> ONNX) -> ``accuracy`` (accuracy-aware INT8 fallback) ->
``compress`` (one call: calibrate, compile every target and precision, self-test, write the bundle).

Above bundle, tasks, calibration and targets; ``benchmarks`` and ``tune`` sit above it.
"""
