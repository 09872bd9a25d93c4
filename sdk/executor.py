"""``Executor``: where ``tune`` trials and ``benchmark`` rows run — here, or as Ray tasks — with its retry rule.

The ground floor of that choice (it imports nothing of edgeship but ``errors``); :mod:`edgeship.cluster`
runs the Ray side of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from .errors import ConfigError

__all__ = ["Executor", "as_executor"]

_KINDS = ("local", "ray")


@dataclass(frozen=True)
class Executor:
    """Where work runs, and how failures are retried.

    Args:
        kind: "local" (in this process, one job at a time) or "ray" (Ray tasks on the nodes that advertise
            each job's target as a custom resource; ``pip install "edgeship[ray]"``).
        address: Ray only: "auto" (the cluster running on this machine), "HOST:PORT", or None (a one-machine
            cluster started for the run; ``$RAY_ADDRESS`` is honoured).
        retries: extra attempts for a job whose worker died, ran past ``timeout_s`` or failed for a reason
            other than an edgeship error (``tune`` retries such trials locally too; ``benchmark`` only on Ray).
        timeout_s: Ray only: a worker running one job longer than this is ended (and retried).
    """

    kind: str = "local"
    address: str | None = None
    retries: int = 2
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"executor must be 'local' or 'ray', got {self.kind!r}")
        if self.kind == "local" and (self.address is not None or self.timeout_s is not None):
            raise ConfigError("address and timeout_s are the Ray cluster's; use Executor('ray', ...) with them")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigError(f"Executor.retries must be an int >= 0, got {self.retries!r}")
        if self.timeout_s is not None and not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise ConfigError(f"Executor.timeout_s must be > 0 seconds or None, got {self.timeout_s!r}")


def as_executor(value: "str | Executor") -> Executor:
    """"local" / "ray" / an Executor -> an Executor (anything else is a ConfigError saying what was expected)."""
    if isinstance(value, Executor):
        return value
    if isinstance(value, str):
        return Executor(value)
    raise ConfigError(f"executor must be 'local', 'ray' or an edgeship.Executor, got {type(value).__name__}")
