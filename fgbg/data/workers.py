"""``data.num_workers=auto``: the number of loader worker processes that feeds training fastest on this machine.

On a CPU the model's step uses every core (torch's intra-op threads), so a worker process decoding beside it
takes CPU from the step, and every batch it makes crosses between processes. The loader costs a few percent
of a CPU step in the training process itself (about 0.2 ms per sample against ms per sample of the step),
so on 2 cores 1 or 2 workers train no faster than none (bench/RESULTS.md, rows 4b), and none start no
processes; from 4 cores one worker takes the decoding off the step's cores (not measured here: 2 cores). A GPU step is so fast that the loader is
the limit: every core but the training process's own decodes.
"""

from __future__ import annotations

import os
import sys

import torch
from lightning.fabric.utilities.seed import pl_worker_init_function

from fgbg.errors import ConfigError, check_int

AUTO = "auto"
# A worker's GIL switch interval, seconds (Python's default: 0.005), see :func:`worker_init`.
HANDOVER_SWITCH_INTERVAL = 0.001
# Beyond this many workers the training process's hand-over of their batches, not decoding, is the limit.
MAX_WORKERS = 8


def available_cores() -> int:
    """The cores this process may run on (its affinity: a container's or a job's share, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def auto_workers(cores: int, gpu: bool) -> int:
    """The worker count of ``auto`` on ``cores`` cores, training on a GPU (``gpu``) or on the CPU."""
    if gpu:
        return max(1, min(cores - 1, MAX_WORKERS))
    return 0 if cores <= 2 else 1


def num_workers(value) -> int:
    """``data.num_workers``: a whole number >= 0, or ``auto`` (:func:`auto_workers` for this machine)."""
    if value == AUTO:
        return auto_workers(available_cores(), torch.cuda.is_available())
    if isinstance(value, str):
        raise ConfigError(f"data.num_workers={value!r}: expected a whole number >= 0 or {AUTO}")
    return check_int("data.num_workers", value, 0)


def worker_init(worker_id: int) -> None:
    """A training loader worker's ``worker_init_fn``.

    Each batch's storage crosses to the training process through a thread of the worker (torch's resource
    sharer), which must take the GIL from the thread decoding the next batch: at Python's default 5 ms switch
    interval every hand-over waited for it (1 ms: +29% samples/s with 1 worker, +7% with 2, on 2 cores).
    Lightning adds its own function, seeding each worker's random generators, only to loaders without one: it
    is called here when ``seed_everything(workers=True)`` asked for it.
    """
    sys.setswitchinterval(HANDOVER_SWITCH_INTERVAL)
    if os.environ.get("PL_SEED_WORKERS") == "1":
        pl_worker_init_function(worker_id)
