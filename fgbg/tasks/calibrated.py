"""train.py's steps for a model fitted without gradients (``model=subtraction``): calibration on the validation
split in place of ``trainer.fit``, and where its checkpoint goes. :func:`fgbg.tasks.train.train` calls them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader

from fgbg.data.batch import BACKGROUND, COMPOSITE, MASK
from fgbg.errors import ConfigError

log = logging.getLogger(__name__)


def fitted_without_gradients(net: nn.Module) -> bool:
    """Whether ``net`` calibrates (a ``calibrate`` method) or has no trainable parameters: nothing to fit."""
    return callable(getattr(net, "calibrate", None)) or not any(p.requires_grad for p in net.parameters())


def calibrate(cfg: DictConfig, net: nn.Module, datamodule: L.LightningDataModule) -> float:
    """Calibrate ``net`` on the clean validation loader (the first, when there are several); the seconds it took.

    A net without ``calibrate`` has nothing to choose (0 seconds). Raises :class:`~fgbg.errors.ConfigError`
    for normalised inputs, which the calibrated baseline's thresholds on [0, 1] differences cannot read.
    """
    if not callable(getattr(net, "calibrate", None)):
        return 0.0
    if cfg.data.normalize:
        raise ConfigError(
            f"data.normalize=true: model {cfg.model._target_.rsplit('.', 1)[-1]} thresholds |composite - background| "
            "of [0, 1] images, which per-category normalisation rescales unequally; set data.normalize=false"
        )
    datamodule.setup("fit")
    loaders = datamodule.val_dataloader()
    started = time.perf_counter()
    net.calibrate(Triples(loaders[0] if isinstance(loaders, list | tuple) else loaders))
    seconds = time.perf_counter() - started
    log.info("%s (%.1f s on the validation split)", net.describe() if hasattr(net, "describe") else net, seconds)
    return seconds


class Triples:
    """A loader's batches as ``(background, composite, mask)``; iterable again and again, as a loader is."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        return ((batch[BACKGROUND], batch[COMPOSITE], batch[MASK]) for batch in self.loader)


def last_checkpoint(cfg: DictConfig, trainer: L.Trainer) -> Path:
    """Where fitting would leave its last checkpoint: ``<checkpoint dirpath>/last.ckpt``, ``<run>/checkpoints/``
    without a checkpoint callback (``callbacks=none``)."""
    callback = trainer.checkpoint_callback
    folder = Path(callback.dirpath) if callback and callback.dirpath else Path(cfg.paths.output_dir) / "checkpoints"
    return folder / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
