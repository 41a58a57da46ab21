"""Where a training step's time goes: waiting for data, or the step itself (the source document timed both by hand)."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.utilities.data import extract_batch_size


class Timings(L.Callback):
    """Per training epoch: ``perf/samples_per_s`` and ``perf/data_wait_fraction``.

    What is measured, per training step, on the host clock:

    - *step*: ``on_train_batch_start`` -> ``on_train_batch_end``: forward, loss, backward, optimiser step
      (on CUDA the callback synchronises at the end, so the GPU's queued work is counted here).
    - *data wait*: the end of the previous step (or the start of the epoch) -> ``on_train_batch_start``:
      fetching the batch (waiting for loader workers, or decoding in this process when
      ``num_workers=0``), copying it to the device, and the loop's bookkeeping between steps. Validation
      in between is not counted.

    ``data_wait_fraction = wait / (wait + step)`` summed over the epoch: near 1, the loader is the limit;
    near 0, the model. ``samples_per_s = samples / (wait + step)``, summed over processes.
    """

    def __init__(self):
        self._mark = self._wait = self._step = 0.0
        self._samples = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wait = self._step = 0.0
        self._samples = 0
        self._mark = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        self._wait += now - self._mark
        self._mark = now
        self._samples += extract_batch_size(batch)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        self._step += now - self._mark
        self._mark = now

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark = time.perf_counter()  # validation inside an epoch is not data wait

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = self._wait + self._step
        if total <= 0:
            return
        pl_module.log("perf/samples_per_s", self._samples / total, reduce_fx="sum", sync_dist=True)
        pl_module.log("perf/data_wait_fraction", self._wait / total, sync_dist=True)
