"""Training progress a person can read: the loss and mask IoU in the bar, a line per validation epoch with the
held-out metrics and the time left, and plain lines in place of the bar when output is not a terminal."""

from __future__ import annotations

import logging
import math
import time

import lightning as L
from lightning.pytorch.callbacks import Timer

from fgbg.progress import Every, format_duration, is_terminal

log = logging.getLogger(__name__)


class TrainingProgress(L.Callback):
    """Shows a run through Lightning's progress bar when there is one on a terminal, else through log lines.

    Args:
        bar: ``{label: logged name}`` shown in the bar in place of Lightning's own items (the logger's version,
            ``v_num``, and values logged with ``prog_bar``).
        epoch_line: logged names in the line after each validation epoch, those logged only; ``a|b``: the first
            of them that is.
        every_s: seconds between training lines when there is no bar (stderr not a terminal, or
            ``trainer.enable_progress_bar=false``): the bar is then switched off.

    The time left is the smaller of two estimates: the steps still to go (``trainer.estimated_stepping_batches``,
    from ``max_epochs``, ``max_steps`` and the batches per epoch) at the pace of this run's steps so far,
    validation included, and what ``trainer.max_time`` leaves, when set (the run stops at the first).
    """

    def __init__(self, bar: dict[str, str], epoch_line: list[str], every_s: float):
        self.bar, self.epoch_line, self.every_s = dict(bar), list(epoch_line), every_s
        self.lines = True
        self._started, self._first_step = time.monotonic(), 0
        self._every = Every(every_s)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        bar = trainer.progress_bar_callback
        self.lines = bar is None or not is_terminal()
        if bar is None:
            return
        if self.lines:
            bar.disable()  # a bar's \r updates in a file are one endless line
        else:
            # The documented way to choose a bar's items is to override get_metrics; the bar is Lightning's own.
            bar.get_metrics = self.bar_items

    def bar_items(self, trainer: L.Trainer, pl_module: L.LightningModule | None = None) -> dict[str, float]:
        """The bar's items: :attr:`bar`'s logged values, by label."""
        items = {}
        for label, name in self.bar.items():
            value = trainer.callback_metrics.get(name)
            if value is not None:
                items[label] = float(value)
        return items

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started, self._first_step = time.monotonic(), trainer.global_step  # a resumed run starts mid-way
        self._every = Every(self.every_s)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self.lines or not trainer.is_global_zero or not self._every():
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        batches = trainer.num_training_batches
        of = f"/{batches}" if math.isfinite(batches) else ""
        shown = f": loss {float(loss):.4f}" if loss is not None else ""
        log.info("%s, batch %d%s%s%s", self._epoch(trainer), batch_idx + 1, of, shown, self._left(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        line = f"{self._epoch(trainer)}: {self.metrics_text(trainer.callback_metrics)}{self._left(trainer)}"
        bar = trainer.progress_bar_callback
        if self.lines or bar is None or trainer.state.fn != "fit":
            log.info(line)
        else:
            bar.print(line)  # above the training bar, which a log line would break
        self._every = Every(self.every_s)  # the next training line a full interval after this one

    def metrics_text(self, metrics: dict) -> str:
        """``val/mask_iou 0.8123  val/depth_delta1 0.9012 ...``: :attr:`epoch_line`'s names that ``metrics`` holds."""
        shown = []
        for choices in self.epoch_line:
            name = next((name for name in choices.split("|") if name in metrics), None)
            if name is not None:
                shown.append(f"{name} {float(metrics[name]):.4f}")
        return "  ".join(shown) or "no metrics logged"

    def _epoch(self, trainer: L.Trainer) -> str:
        """``epoch 3/9, step 120`` while fitting, ``epoch 0`` otherwise: numbered from 0 like Lightning's bar, the
        checkpoints and the grids, of ``max_epochs - 1``; the step is the optimiser steps so far."""
        last = trainer.max_epochs - 1 if trainer.max_epochs and trainer.max_epochs > 0 else None
        text = f"epoch {trainer.current_epoch}" + (f"/{last}" if last is not None else "")
        return f"{text}, step {trainer.global_step}" if trainer.state.fn == "fit" else text

    def _left(self, trainer: L.Trainer) -> str:
        left = self.time_left(trainer)
        return f"  ({format_duration(left)} left)" if left is not None else ""

    def time_left(self, trainer: L.Trainer) -> float | None:
        """Seconds until the fit ends (see the class's docstring); None before a step or outside a fit."""
        estimates = []
        done = trainer.global_step - self._first_step
        total = trainer.estimated_stepping_batches if trainer.state.fn == "fit" else math.inf
        if done > 0 and math.isfinite(total):
            estimates.append((time.monotonic() - self._started) / done * max(0, total - trainer.global_step))
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        if timer is not None and timer.time_remaining("train") is not None:
            estimates.append(timer.time_remaining("train"))
        return min(estimates) if estimates else None
