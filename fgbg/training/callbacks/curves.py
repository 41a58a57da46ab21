"""A run's own record of its epochs (table and loss curves, whatever the loggers), and a learning-rate monitor that
stands aside when a run has no logger."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor

from fgbg.tools.curves import CURVES_FILE, RESULTS_FILE, epoch_table, plot_curves


class Curves(L.Callback):
    """Each epoch's values of ``metrics`` (training ones at the epoch's end, validation ones after each
    validation), and the test split's; at the end of fitting and again after testing, ``<dirpath>/results.md``
    (:func:`~fgbg.tools.curves.epoch_table`: a row per epoch, then the test row) and ``<dirpath>/curves.png``.

    The history is kept in checkpoints, so a resumed run's table and curves start at its first epoch.

    Args:
        dirpath: the run folder.
        metrics: logged names (``train/loss``, ``val/mask_iou``, ...); the test row takes each ``val/`` one's
            ``test/`` counterpart.
    """

    def __init__(self, dirpath: str, metrics: Sequence[str]):
        self.dirpath = Path(dirpath)
        self.metrics = list(metrics)
        self.history: dict[int, dict[str, float]] = {}
        self.test: dict[str, float] = {}

    def _record(self, trainer: L.Trainer, stage: str) -> None:
        """The ``metrics`` of ``stage`` (``train`` or ``val``: ``val_perturbed/...`` included) logged this epoch."""
        values = self.history.setdefault(trainer.current_epoch, {})
        for name in self.metrics:
            if name.startswith(stage) and name in trainer.callback_metrics:
                values[name] = float(trainer.callback_metrics[name])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, "train")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, "val")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test = {name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("test")}
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / RESULTS_FILE).write_text(epoch_table(self.history, self.metrics, self.test) + "\n")
        plot_curves(self.history, self.metrics, self.dirpath / CURVES_FILE, self.dirpath.name)

    def state_dict(self) -> dict:
        # JSON-like (str keys, floats): checkpoints load with torch.load(weights_only=True).
        return {"history": {str(epoch): values for epoch, values in self.history.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {int(epoch): dict(values) for epoch, values in state_dict["history"].items()}


class LearningRates(LearningRateMonitor):
    """Lightning's :class:`LearningRateMonitor` (``lr-<optimiser>`` into the loggers), which does nothing in a run
    without a logger (``logger=none``) where Lightning's would stop it with an error."""

    def __init__(self, logging_interval: str | None, **kwargs):
        super().__init__(logging_interval=logging_interval, **kwargs)

    def on_train_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)
