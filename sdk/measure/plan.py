"""``Measurement``: how ``benchmark`` (and each ``tune`` trial) times a variant — one object, checked once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError

__all__ = ["Measurement", "as_measurement"]


@dataclass(frozen=True)
class Measurement:
    """How each variant is timed.

    Args:
        runs, warmup: timed calls, and untimed calls before them.
        batch_size: samples per timed call.
        streams: > 1 also measures throughput with this many runtimes of each variant running concurrently,
            one thread each.
        ci_resamples: bootstrap resamples for a user metric's interval (0: none; the metric is then called
            once per row).
        threads: CPU threads for every runtime (None: each backend's own choice).
        options: more runtime options per target, e.g. ``{"openvino-cpu": {"inference_precision": "bf16"}}``
            (each target's ``runtime_options`` lists what it accepts); recorded in each row.
    """

    runs: int = 100
    warmup: int = 10
    batch_size: int = 1
    streams: int = 1
    ci_resamples: int = 200
    threads: int | None = None
    options: Mapping[str, Mapping[str, Any]] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        for name, low in (("runs", 1), ("warmup", 0), ("batch_size", 1), ("streams", 1), ("ci_resamples", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"Measurement.{name} must be an int >= {low}, got {value!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ConfigError(f"Measurement.threads must be an int >= 1 or None, got {self.threads!r}")
        if self.options is not None and not (isinstance(self.options, Mapping)
                                             and all(isinstance(v, Mapping) for v in self.options.values())):
            raise ConfigError("Measurement.options must map a target name to its runtime options, "
                              f"got {self.options!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for report settings and cache keys."""
        out = asdict(self)
        out["options"] = {t: dict(o) for t, o in (self.options or {}).items()}
        return out


def as_measurement(value: "Measurement | None") -> Measurement:
    """``value``, or ``Measurement()`` for None; anything else is a ConfigError saying what was expected."""
    if value is None:
        return Measurement()
    if not isinstance(value, Measurement):
        raise ConfigError(f"measure must be an edgeship.Measurement, got {type(value).__name__}")
    return value
