"""The device side: ``choice`` (which artifact runs here, by self-test and measurement, cached per install),
``deploy`` (install / rollback of signed archives), ``serve`` (HTTP), ``stream`` (video). The top of the
library: it uses bundle, tasks and the rules of tune; nothing below imports it.
"""
