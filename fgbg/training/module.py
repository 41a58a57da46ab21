"""The LightningModule: a model from ``conf/model/``, the loss from ``conf/loss/``, the optimiser and schedule.

It unpacks batches (:mod:`fgbg.data.batch`) and feeds the model tensors. Every value is logged as
``<stage>/<name>`` (:func:`logged_name`): the loss terms, and for validation and test the held-out metrics of
``fgbg.training.metrics`` (``val/mask_iou``, ...) per epoch. :data:`MONITORED` is what checkpoints rank by.

``build_module(cfg)`` makes it from a composed config (train, eval and predict share it) and records
those config groups and the data's :class:`~fgbg.data.transforms.Preprocessing` in the module's
hyperparameters, so a checkpoint carries plain config, not pickled objects, and loads with
``torch.load(weights_only=True)`` (the default, also when resuming a fit); ``load_module(path)`` rebuilds
the module from a checkpoint alone, checkpoints of earlier versions included.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.data.transforms import Preprocessing
from fgbg.errors import FgbgError
from fgbg.training.losses import MaskDepthLoss
from fgbg.training.metrics import MaskDepthMetrics
from fgbg.upgrade import moved_targets, upgraded_model


def logged_name(stage: str, name: str) -> str:
    """What the module logs value ``name`` (``loss``, ``mask_iou``, ...) of ``stage`` (train, val, test) as."""
    return f"{stage}/{name}"


HELD_OUT = ("val", "test")  # the stages that also accumulate metrics
# What conf/callbacks/default.yaml's ModelCheckpoint monitors (tests/test_callbacks.py checks that they agree).
MONITORED = logged_name("val", "loss")


class CheckpointError(FgbgError, ValueError):
    """A file that is not a checkpoint of train.py, or cannot be read; the message names it."""


class MaskDepthModule(L.LightningModule):
    """Trains ``net`` on a composite's mask and depth.

    Args:
        net: ``(background, composite) -> (mask_logits, raw depth)``, ``(B, 1, H, W)`` each (see ``fgbg.models``).
        loss: the mask and depth loss.
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``).
        scheduler: ``Optimizer -> LRScheduler``, stepped once per epoch; ``None`` keeps the learning rate.
        preprocessing: how the training data's images became tensors (``None`` when built without data):
            predict and eval prepare theirs the same way.

    Reload a checkpoint with ``load_module(path)``. Lightning's ``load_from_checkpoint`` needs ``net``,
    ``loss``, ``optimizer`` (and ``scheduler``) passed in: the hyperparameters hold their config
    (``hparams.config``), not the objects.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: MaskDepthLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler] | None = None,
        preprocessing: Preprocessing | None = None,
    ):
        super().__init__()
        self.net = net
        self.preprocessing = preprocessing
        self.loss = loss
        self.make_optimizer = optimizer
        self.make_scheduler = scheduler
        # Metric states are not saved in checkpoints (torchmetrics keeps them out of the state dict).
        self.held_out_metrics = nn.ModuleDict({stage: MaskDepthMetrics(logged_name(stage, "")) for stage in HELD_OUT})

    def forward(self, background: Tensor, composite: Tensor) -> tuple[Tensor, Tensor]:
        """``background``, ``composite`` ``(B, C, H, W)`` -> ``(mask_logits, depth)``, ``(B, 1, H, W)`` each,
        depth in [0, 1] like its target.

        Mended: the source document fed the raw, unbounded depth to SSIM, whose data range is [0, 1];
        the sigmoid bounds it.
        """
        mask_logits, depth = self.net(background, composite)
        return mask_logits, torch.sigmoid(depth)

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        mask_logits, depth = self(batch[BACKGROUND], batch[COMPOSITE])
        losses = self.loss(mask_logits, depth, batch[MASK], batch[DEPTH])
        train = stage == "train"
        # Per-step values only for training; validation and test are read per epoch, reduced over devices
        # (training skips the reduction: it would cost a collective every step).
        self.log_dict(
            {logged_name(stage, name): value for name, value in losses.items()},
            on_step=train,
            on_epoch=True,
            sync_dist=not train,
            batch_size=mask_logits.shape[0],
        )
        if not train:
            metrics = self.held_out_metrics[stage]
            metrics.update(mask_logits, depth, batch[MASK], batch[DEPTH])
            # Metric objects: Lightning computes them over the epoch (synced by torchmetrics), then resets them.
            self.log_dict(metrics.mask, on_step=False, on_epoch=True)
            self.log_dict(metrics.depth, on_step=False, on_epoch=True)
        return losses["loss"]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``mask``: foreground probability, ``depth``: in [0, 1] (brighter = nearer), ``(B, 1, H, W)`` each."""
        mask_logits, depth = self(batch[BACKGROUND], batch[COMPOSITE])
        return {MASK: torch.sigmoid(mask_logits), DEPTH: depth}

    def configure_optimizers(self) -> dict:
        optimizer = self.make_optimizer(self.parameters())
        if self.make_scheduler is None:
            return {"optimizer": optimizer}
        scheduler = self.make_scheduler(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def build_module(cfg: DictConfig) -> MaskDepthModule:
    """The module from a composed config's ``model``, ``loss``, ``optimizer`` and ``scheduler`` groups.

    An empty or missing ``scheduler`` (``conf/scheduler/none.yaml``) means a constant learning rate. With a
    ``data`` group (train.py's), its :class:`~fgbg.data.transforms.Preprocessing` goes along.
    """
    config = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "loss", "optimizer")}
    config["scheduler"] = OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None
    return _assembled(config, Preprocessing.from_data(cfg.data) if cfg.get("data") is not None else None)


def _assembled(config: dict, preprocessing: Preprocessing | None) -> MaskDepthModule:
    """The module of resolved groups ``config``, which become its hyperparameters under ``config`` with the
    preprocessing as one entry (not under the names of ``MaskDepthModule``'s arguments, which
    ``load_from_checkpoint`` would pass as configs in place of objects), so that checkpoints keep them."""
    module = MaskDepthModule(
        net=instantiate(config["model"]),
        loss=instantiate(config["loss"]),
        optimizer=instantiate(config["optimizer"]),
        scheduler=instantiate(config["scheduler"]) if config["scheduler"] else None,
        preprocessing=preprocessing,
    )
    saved = {**config, "preprocessing": preprocessing.to_config() if preprocessing else None}
    # Not sent to loggers: the entry points log the whole composed config, of which this is a part.
    module.save_hyperparameters({"config": saved}, logger=False)
    return module


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> MaskDepthModule:
    """Rebuild a ``build_module`` module from its checkpoint alone: the config it was built from, then the weights.

    The checkpoint holds only tensors and plain containers, so it loads with ``weights_only=True``.
    Raises :class:`CheckpointError`, naming ``path``, for a missing file or one that is not such a checkpoint.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, map_location)
    try:
        config, weights = checkpoint["hyper_parameters"]["config"], checkpoint["state_dict"]
    except (KeyError, TypeError) as error:  # another kind of torch file: a bare state dict, a list, ...
        raise CheckpointError(
            f"{path}: not a checkpoint of train.py (it holds no hyper_parameters.config and state_dict)"
        ) from error
    config = upgraded_config(config)
    preprocessing = config.pop("preprocessing")
    module = _assembled(config, Preprocessing(**preprocessing) if preprocessing else None)
    try:
        module.load_state_dict(weights)
    except RuntimeError as error:  # missing, unexpected or mis-shaped tensors
        raise CheckpointError(
            f"{path}: its weights do not fit the model its config describes (damaged, or made by another version)"
        ) from error
    return module


def upgraded_config(config: dict) -> dict:
    """A checkpoint's ``hyper_parameters.config`` as this version writes it: moved ``_target_`` s rewritten,
    the U-Net's first layout filled in where it records none, the ``data`` settings of checkpoints before
    the preprocessing entry (image_size, grayscale, normalize, stats) made into that entry."""
    config = moved_targets(config)
    config["model"] = upgraded_model(config["model"])
    if "preprocessing" not in config:
        data = config.pop("data", None)
        config["preprocessing"] = Preprocessing.from_data(data).to_config() if data else None
    return config


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(path, weights_only=True)``, its errors said as a :class:`CheckpointError`."""
    unreadable = (
        f"{path}: not a checkpoint of train.py (torch.load(weights_only=True) cannot read it: damaged, "
        "not written by torch.save, or holding objects other than tensors and plain containers)"
    )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as error:
        raise CheckpointError(f"{path}: no such checkpoint (train.py writes <run>/checkpoints/last.ckpt)") from error
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read it ({error.strerror})") from error
    except EOFError as error:
        raise CheckpointError(f"{path}: not a checkpoint of train.py (the file is empty or cut short)") from error
    except pickle.UnpicklingError:
        # Not chained, not even in full tracebacks: torch's text advises weights_only=False, which would run
        # whatever code the file holds.
        raise CheckpointError(unreadable) from None
    except RuntimeError as error:  # not a torch zip, or a damaged one
        raise CheckpointError(unreadable) from error
