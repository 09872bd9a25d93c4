"""The device side: ``choice`` (which artifact runs here, by self-test and measurement, cached per install),
``deploy`` (install / rollback of signed archives), ``serve`` (HTTP), ``stream`` (video). The top of the
library: it uses bundle, tasks and the rules of tune; nothing below imports it.

``ServeLimits`` (the limits of ``serve.ModelServer``) is exported here, imported on first use: ``import
edgeship`` imports this package, and the server module (asyncio and the rest) loads only when asked for.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``ServeLimits`` from :mod:`.serve` on first access, so that importing the package stays light."""
    if name == "ServeLimits":
        from .serve import ServeLimits

        return ServeLimits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
