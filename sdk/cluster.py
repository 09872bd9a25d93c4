"""The Ray cluster, and the one scheduler that ``tune`` and ``benchmark(executor="ray")`` share.

Each task asks for one unit of a custom resource named after its target (``{"openvino-cpu": 1}``), so
device boxes that join the cluster advertising their targets form a farm. Per target no more tasks are
submitted than the cluster has units of its resource, so nothing waits in Ray's own queue: on Ctrl-C the
driver stops submitting, and what is in flight ends with the cluster (or connection) it opened —
``ray.cancel`` is not used, as in Ray 2.x it can crash the driver when it races a finishing task
(ray-project/ray #54798, #54846). A task whose worker dies, or that returns an outcome marked ``retry``,
is submitted again up to ``retries`` times; bundles travel as tar bytes checked by SHA-256.

Above ``bundle`` (it unpacks archives), below ``benchmarks`` and ``tune``, which say what a task does.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

from ._lazy import require
from .errors import ConfigError, TransferError

# exit status of a worker that its watchdog ended for running past the task timeout
TIMEOUT_EXIT = 75


def watchdog(timeout_s: float | None) -> threading.Timer | None:
    """End this worker process after ``timeout_s``: a hung native call cannot be interrupted any other way."""
    if timeout_s is None:
        return None
    timer = threading.Timer(timeout_s, os._exit, args=(TIMEOUT_EXIT,))
    timer.daemon = True
    timer.start()
    return timer


def unpack_checked(data: bytes, sha256: str | None, dest: Path) -> Path:
    """Unpack bundle tar bytes sent over the cluster into ``dest`` after checking their SHA-256 (and, by
    ``archive.unpack``, every file's); TransferError when the bytes changed on the way."""
    from .bundle.archive import unpack

    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise TransferError(f"the bundle arrived with SHA-256 {actual[:16]}…, expected {str(sha256)[:16]}…")
    archive = dest.parent / (dest.name + ".tar")
    archive.write_bytes(data)
    try:
        unpack(archive, dest)
    finally:
        archive.unlink()
    return dest


def _require_ray() -> Any:
    return require("ray", "executor='ray'")


class RayCluster:
    """A connection to the Ray cluster at ``address`` (``"auto"``: the one running here; ``$RAY_ADDRESS`` is
    honoured), or a one-machine cluster started for the work (stopped after it) when Ray is not initialised.

    The one-machine cluster advertises one unit of each target and a single CPU, so its tasks run one at a
    time: a latency measured while another task compiles or measures on the same cores is not the device's.
    Entering checks that some node advertises every target, so no task waits forever for a resource:
    ``strict`` refuses a cluster that lacks one; otherwise those targets are dropped into ``missing``
    (and only when every one is missing is the cluster refused). ``advertise``: what a started
    one-machine cluster offers (default: every target).
    """

    def __init__(self, targets: Sequence[str], address: str | None = None, *, strict: bool = True,
                 advertise: Sequence[str] | None = None) -> None:
        self.targets = list(dict.fromkeys(targets))
        self.address = address
        self.strict = strict
        self.advertise = list(advertise) if advertise is not None else list(self.targets)
        self.missing: list[str] = []
        self._started = False
        self.startup_s = 0.0
        self.ray: Any = None  # the ray module, once entered (the scheduler and the callers submit through it)

    def __enter__(self) -> "RayCluster":
        ray = self.ray = _require_ray()
        t0 = time.perf_counter()
        if not ray.is_initialized():
            if self.address is not None or os.environ.get("RAY_ADDRESS"):
                try:
                    ray.init(address=self.address, log_to_driver=False)
                except ConnectionError as exc:
                    raise ConfigError(f"cannot reach the Ray cluster at {self.address or os.environ['RAY_ADDRESS']!r} "
                                      f"({exc}); start one with `ray start --head`, or leave the address out to start "
                                      "a local cluster") from None
            else:
                ray.init(num_cpus=1, resources={t: 1 for t in self.advertise}, include_dashboard=False,
                         log_to_driver=False)
            self._started = True
        self.startup_s = time.perf_counter() - t0
        try:
            resources = ray.cluster_resources()
            missing = [t for t in self.targets if resources.get(t, 0) < 1]
            if missing and not self.strict and len(missing) < len(self.targets):
                self.missing = missing
                self.targets = [t for t in self.targets if t not in missing]
            elif missing:
                raise ConfigError(
                    f"no node of the Ray cluster advertises the resources {missing}, so their tasks would never "
                    f"run; the cluster has {sorted(k for k in resources if not k.startswith('node:'))}. Start each "
                    "device with e.g. `ray start --address HEAD:6379 --resources '{\"" + missing[0] + "\": 1}'`")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False

    def capacity(self) -> dict[str, int]:
        """Per target, how many tasks the cluster can run at once (units of its resource advertised)."""
        resources = self.ray.cluster_resources()
        return {t: max(1, int(resources.get(t, 1))) for t in self.targets}



#: what the scheduler calls with each finished task: (key, outcome, attempt, extra result refs, submitted at)
OnResult = Callable[[Hashable, dict, int, tuple, float], None]


class RayScheduler:
    """Tasks of one remote function, queued per target and submitted while the cluster has a free unit of
    that target's resource; a worker death or an outcome with ``"retry": True`` is submitted again (first in
    its queue) up to ``retries`` times, then handed to ``on_result`` like any other outcome.

    ``args`` of :meth:`submit` may be a callable, called at submission: a task can then send what earlier
    tasks produced (tune sends the bundle its compile key's first trial compiled).
    """

    def __init__(self, cluster: RayCluster, remote: Callable, *, retries: int, timeout_s: float | None,
                 failed: Callable[[str], dict], num_returns: int = 1) -> None:
        self.ray = cluster.ray
        self._task = self.ray.remote(num_returns=num_returns, max_retries=0)(remote)
        self._multi = num_returns > 1
        self.retries, self.timeout_s, self._failed = retries, timeout_s, failed
        self._capacity = cluster.capacity()
        self._ready: dict[str, deque] = {t: deque() for t in cluster.targets}
        self._in_flight = {t: 0 for t in cluster.targets}
        self.pending: dict[Any, tuple] = {}  # result ref -> (target, key, args, attempt, extra refs, submitted at)

    def submit(self, target: str, key: Hashable, args: tuple | Callable[[], tuple], attempt: int = 1) -> None:
        """Queue one task for ``target`` (submitted when a unit of it is free)."""
        self._ready[target].append((key, args, attempt))

    def run(self, on_result: OnResult) -> None:
        """Submit and wait until no task is queued or in flight; ``on_result`` may submit more."""
        ray = self.ray
        self._pump()
        while self.pending:
            done, _ = ray.wait(list(self.pending), num_returns=1, timeout=1.0)
            for ref in done:
                target, key, args, attempt, extra, submitted_at = self.pending.pop(ref)
                self._in_flight[target] -= 1
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    outcome = self._failed(describe_failure(exc, self.timeout_s))
                if outcome.get("retry") and attempt <= self.retries:
                    self._ready[target].appendleft((key, args, attempt + 1))
                    continue
                on_result(key, outcome, attempt, extra, submitted_at)
            self._pump()

    def _pump(self) -> None:
        for target, queue in self._ready.items():
            while queue and self._in_flight[target] < self._capacity[target]:
                key, args, attempt = queue.popleft()
                submitted_at = time.time()
                refs = self._task.options(resources={target: 1}).remote(*(args() if callable(args) else args))
                first, extra = (refs[0], tuple(refs[1:])) if self._multi else (refs, ())
                self.pending[first] = (target, key, args, attempt, extra, submitted_at)
                self._in_flight[target] += 1


def describe_failure(exc: Exception, timeout_s: float | None) -> str:
    """A Ray failure in words: worker deaths mention the timeout watchdog that may have caused them."""
    name = type(exc).__name__
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    if name in ("WorkerCrashedError", "ActorDiedError", "NodeDiedError", "OutOfMemoryError"):
        why = " (or its watchdog ended it after the {:g} s trial timeout)".format(timeout_s) if timeout_s else ""
        return f"the worker died{why}: {name}: {first}"
    return f"{name}: {first}"
