"""A warning when the depth prediction has gone flat: a dead depth head should not go unnoticed for a whole run."""

from __future__ import annotations

import logging

import lightning as L

log = logging.getLogger(__name__)


class FlatDepthWarning(L.Callback):
    """After each validation epoch, warn when ``monitor`` (the predicted depth's standard deviation over the epoch's
    pixels, ``val/depth_spread``) is below ``min_spread``: every pixel of every image then gets about the same depth.

    Read in ``on_validation_end``, where the epoch's metric values have been computed; the sanity check is
    skipped, and so are runs that log no such value (mask-only data).
    """

    def __init__(self, monitor: str, min_spread: float):
        self.monitor, self.min_spread = monitor, min_spread

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        spread = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or spread is None or float(spread) >= self.min_spread:
            return
        log.warning(
            "epoch %d: %s = %.2g < %g, the depth prediction is flat (the same depth everywhere); its head may be "
            "saturated: a depth loss with an L1 term (loss=matting) and model.depth_output=clamp keep it learning",
            trainer.current_epoch,
            self.monitor,
            float(spread),
            self.min_spread,
        )
