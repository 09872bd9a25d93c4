"""The device side: ``choice`` (which artifact runs here, by self-test and measurement, cached per install),
``deploy`` (install / rollback of signed archives), ``serve`` (HTTP; its admission limits in ``limits``),
``stream`` (video). The top of the library: it uses bundle, tasks and the rules of tune; nothing below imports it.
"""

from __future__ import annotations

from .limits import ServeLimits

__all__ = ["ServeLimits"]
