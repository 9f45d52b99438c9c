"""`entitlements serve --workers N`: one server process per core, sharing the port.

The parent forks the workers before any gRPC object exists (gRPC's core must not be copied
across a fork) and only supervises: it forwards SIGTERM/SIGINT, and if a worker dies it stops
the others and exits non-zero, so the process supervisor (systemd, Kubernetes) restarts the
whole service rather than it running silently short of workers. Each worker binds the port with
SO_REUSEPORT, keeps its own cache, and stays coherent with the others through the store's change
feed (see entitlements.coherence).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def run_workers(count: int, run_one: Callable[[int], int]) -> int:
    """Fork `count` workers running `run_one(index)`; return the exit code for the parent."""
    children: dict[int, int] = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = run_one(index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = index
    log.info("started %d workers: %s", count, ", ".join(map(str, children)))

    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _signal(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    exit_code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, -1)
        code = os.waitstatus_to_exitcode(status)
        if index < 0:
            continue
        if not stopping:
            log.error("worker %d (pid %d) exited with %d: stopping the others", index, pid, code)
            stopping = True
            exit_code = 1
            for other in children:
                _signal(other, signal.SIGTERM)
        elif code != 0:
            exit_code = exit_code or (code if code > 0 else 1)
    time.sleep(0)  # let log handlers flush
    return exit_code


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
