"""Worker processes that die with the stage: the pool every parallel step of the pipeline uses."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """Pool initializer: on Linux, have the kernel kill this worker when the stage process dies.

    Forked workers otherwise outlive a `kill -9` of the stage and sleep forever on their queue.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def worker_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A process pool of `workers` (default: one per CPU) that `die_with_parent`."""
    return ProcessPoolExecutor(max_workers=workers or os.cpu_count(), initializer=die_with_parent)
