"""`entitlements serve --workers N`: one server process per core, sharing the port.

The parent forks the workers before any gRPC object exists (gRPC's core must not be copied
across a fork) and only supervises. A worker that dies is replaced, after a backoff that doubles
while replacements keep dying young (a worker crash-looping at start is given up on after
`give_up_after` quick deaths in a row: the parent then stops the others and exits 1, for the
process supervisor to see); meanwhile the survivors keep serving on the shared port. A worker
exiting with 2 (a configuration or schema error, which a restart cannot fix) stops the service
with 2. SIGTERM/SIGINT are forwarded to every worker and the parent exits once all have.

Each worker binds the port with SO_REUSEPORT, keeps its own cache, and stays coherent with the
others through the store's change feed (see entitlements.coherence). The number of replacements
lives in memory shared with the workers, so every worker's /metrics reports the same
`entitlements_worker_restarts_total`.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from entitlements.observability.metrics import expose_worker_restarts

log = logging.getLogger(__name__)

#: A worker's exit code for a configuration or schema error: restarting it cannot help.
EXIT_CONFIG = 2


class SharedCounter:
    """An integer in anonymous shared memory: the parent writes it, forked workers read it."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, 8)

    @property
    def value(self) -> int:
        return int(struct.unpack_from("q", self._memory, 0)[0])

    def increment(self) -> None:
        struct.pack_into("q", self._memory, 0, self.value + 1)


@dataclass
class _Slot:
    """One worker position: its process, when it started, how many times in a row it died young."""

    index: int
    pid: int = 0
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None


def run_workers(
    count: int,
    run_one: Callable[[int], int],
    *,
    backoff_seconds: float = 1.0,
    max_backoff_seconds: float = 30.0,
    healthy_after_seconds: float = 10.0,
    give_up_after: int = 8,
    on_exit: Callable[[int], None] | None = None,
) -> int:
    """Fork `count` workers running `run_one(index)`, supervise them until SIGTERM/SIGINT and
    return the parent's exit code. `on_exit(pid)` is called for each worker reaped."""
    restarts = SharedCounter()
    slots = [_Slot(index) for index in range(count)]
    by_pid: dict[int, _Slot] = {}

    def spawn(slot: _Slot) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            expose_worker_restarts(lambda: restarts.value)
            code = 1
            try:
                code = run_one(slot.index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        slot.pid, slot.started, slot.restart_at = pid, time.monotonic(), None
        by_pid[pid] = slot

    for slot in slots:
        spawn(slot)
    log.info("started %d workers: %s", count, ", ".join(str(s.pid) for s in slots))

    stopping = False
    exit_code = 0

    def stop_all(signum: int) -> None:
        nonlocal stopping
        stopping = True
        for slot in slots:
            slot.restart_at = None
        for pid in by_pid:
            _signal(pid, signum)

    signal.signal(signal.SIGTERM, lambda signum, _frame: stop_all(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stop_all(signum))
    while by_pid or any(s.restart_at is not None for s in slots):
        now = time.monotonic()
        for slot in slots:
            if slot.restart_at is not None and now >= slot.restart_at and not stopping:
                restarts.increment()
                spawn(slot)
                log.warning("worker %d restarted as pid %d", slot.index, slot.pid)
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid, status = 0, 0
        if pid == 0:
            time.sleep(0.05)
            continue
        dead = by_pid.pop(pid, None)
        if dead is None:
            continue
        if on_exit is not None:
            on_exit(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            # A worker still starting when the signal came ends by it: that is a clean stop too.
            if code not in (0, -signal.SIGTERM, -signal.SIGINT):
                exit_code = exit_code or (code if code > 0 else 1)
            continue
        lived = time.monotonic() - dead.started
        if code == EXIT_CONFIG:
            log.error(
                "worker %d (pid %d) exited with %d: stopping the service", dead.index, pid, code
            )
            exit_code = EXIT_CONFIG
            stop_all(signal.SIGTERM)
            continue
        dead.quick_deaths = dead.quick_deaths + 1 if lived < healthy_after_seconds else 1
        if dead.quick_deaths > give_up_after:
            log.error(
                "worker %d died %d times in a row within %.0fs of starting: giving up, "
                "stopping the service",
                dead.index,
                dead.quick_deaths,
                healthy_after_seconds,
            )
            exit_code = 1
            stop_all(signal.SIGTERM)
            continue
        delay = min(backoff_seconds * 2 ** (dead.quick_deaths - 1), max_backoff_seconds)
        dead.restart_at = time.monotonic() + delay
        log.error(
            "worker %d (pid %d) %s after %.1fs; restarting it in %.2gs, the others keep serving",
            dead.index,
            pid,
            _how(code),
            lived,
            delay,
        )
    return exit_code


def _how(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with {code}"


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
