"""Worker processes that end with the run that started them (generation's pool, the cache's builders and loaders)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Run first in a worker process: have the kernel SIGKILL it when ``parent_pid`` (its parent) dies.

    A worker that outlived a killed run would go on writing (and renaming) zips while the next run starts,
    then wait for work forever. Linux only (``prctl(PR_SET_PDEATHSIG)``); on other systems workers finish
    their task first, holding the zip's lock until then. The parent may have died before the request.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
