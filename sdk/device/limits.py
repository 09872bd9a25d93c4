"""``ServeLimits``: what one ModelServer admits — connections, uploads, inferences — checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["ServeLimits"]


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ServeLimits:
    """What one :class:`ModelServer` admits: connections, uploads and inferences, so that memory and threads stay
    bounded whatever the load; validated when built (ConfigError naming the field).

    ``workers``: inference threads (and runtimes); at most this many requests run at once.
    ``max_queue``: admitted requests that wait for a worker; beyond ``workers + max_queue`` a request gets 429
    with Retry-After before its body is read. ``max_body``: bytes a request body may have (413 beyond).
    Bodies are read before a request is admitted to inference, at most ``max_uploads`` at once (None:
    4 x (workers + max_queue)), each within ``body_timeout`` s or at ``min_upload_rate`` bytes/s, whichever
    allows longer (408 otherwise): a stalled upload holds an upload place, never an inference one.
    ``max_connections`` caps open connections (uvicorn answers 503 beyond it); a connection whose request
    headers have not all arrived ``header_timeout`` s after it opened (or after its last answer) is closed
    (slowloris). ``graceful_timeout``: seconds shutdown waits for in-flight requests (None: no limit).
    """

    workers: int = 1
    max_queue: int = 8
    max_body: int = 16 << 20
    body_timeout: float = 10.0
    graceful_timeout: float | None = None
    max_uploads: int | None = None
    min_upload_rate: float = 64 << 10
    max_connections: int = 512
    header_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("workers", "max_queue", "max_body", "max_uploads", "max_connections"):
            value = getattr(self, name)
            if not (_integer(value) or (value is None and name == "max_uploads")):
                raise ConfigError(f"ServeLimits.{name} must be an integer; got {name}={value!r}")
        for name in ("body_timeout", "graceful_timeout", "min_upload_rate", "header_timeout"):
            value = getattr(self, name)
            if not (_number(value) or (value is None and name == "graceful_timeout")):
                raise ConfigError(f"ServeLimits.{name} must be a number; got {name}={value!r}")
        if self.workers < 1 or self.max_queue < 0 or self.max_body < 1:
            raise ConfigError(f"need workers >= 1, max_queue >= 0 and max_body >= 1; got workers={self.workers}, "
                              f"max_queue={self.max_queue}, max_body={self.max_body}")
        uploads = self.uploads
        if uploads < 1 or not self.min_upload_rate > 0 or self.max_connections < 1 or not self.header_timeout > 0:
            raise ConfigError(f"need max_uploads >= 1, min_upload_rate > 0, max_connections >= 1 and "
                              f"header_timeout > 0; got max_uploads={uploads}, min_upload_rate={self.min_upload_rate}, "
                              f"max_connections={self.max_connections}, header_timeout={self.header_timeout}")
        if not self.body_timeout > 0:
            raise ConfigError(f"need body_timeout > 0 (the seconds any body may take); "
                              f"got body_timeout={self.body_timeout}")
        if self.graceful_timeout is not None and not self.graceful_timeout >= 0:
            raise ConfigError(f"need graceful_timeout >= 0 or None (no limit); "
                              f"got graceful_timeout={self.graceful_timeout}")

    @property
    def uploads(self) -> int:
        """The upload places: ``max_uploads``, or 4 per inference place when it is None."""
        return self.max_uploads if self.max_uploads is not None else 4 * (self.workers + self.max_queue)
