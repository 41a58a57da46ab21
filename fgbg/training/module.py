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
from fgbg.data.datamodule import EVAL_VARIANTS
from fgbg.data.transforms import Preprocessing
from fgbg.errors import FgbgError
from fgbg.training.depth_metrics import depth_space
from fgbg.training.losses import MaskDepthLoss, in_float32
from fgbg.training.metrics import MaskDepthMetrics
from fgbg.upgrade import moved_targets, upgraded_model


def logged_name(stage: str, name: str) -> str:
    """What the module logs value ``name`` (``loss``, ``mask_iou``, ...) of ``stage`` (train, val, test) as."""
    return f"{stage}/{name}"


HELD_OUT = ("val", "test")  # the stages that also accumulate metrics
CLEAN = EVAL_VARIANTS[0]  # the held-out data as it is; the others are variants of it (perturbed plates)


def held_out_stage(stage: str, variant: str) -> str:
    """``val`` / ``test`` for the clean held-out data, ``val_<variant>`` for a variant (``val_perturbed``)."""
    return stage if variant == CLEAN else f"{stage}_{variant}"


def bounded_depth(raw: Tensor, output: str) -> Tensor:
    """Raw depth ``(B, 1, H, W)`` -> [0, 1] by ``output`` (:data:`~fgbg.models.base.DEPTH_OUTPUTS`): ``sigmoid``,
    or ``clamp``: ``raw + 0.5`` clamped, with the gradient of the identity (straight through), so a prediction
    out of range is still pulled back by the loss where a saturated sigmoid would pass no gradient."""
    if output == "sigmoid":
        return torch.sigmoid(raw)
    shifted = raw + 0.5
    return shifted + (shifted.clamp(0, 1) - shifted).detach()
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
        with_depth: train and score the depth (False for mask-only data, or a model that predicts none: the
            depth loss, metrics and outputs are then left out).
        depth_record: the data's depth record (its zips' manifest ``settings.depth``), which says in what space
            depth metrics are computed (:func:`~fgbg.training.depth_metrics.depth_space`); eval sets its own data's
            with :meth:`use_data`.

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
        with_depth: bool = True,
        depth_record: dict | None = None,
    ):
        super().__init__()
        self.net = net
        self.preprocessing = preprocessing
        self.with_depth = with_depth and net.predicts_depth
        self.loss = loss
        self.make_optimizer = optimizer
        self.make_scheduler = scheduler
        if preprocessing is not None:  # Lightning's model summary then counts FLOPs (else it prints "Total FLOPs: 0")
            side = preprocessing.image_size
            self.example_input_array = (torch.zeros(1, 3, side, side), torch.zeros(1, 3, side, side))
        self.use_data(True, depth_record)

    def use_data(self, has_depth: bool, depth_record: dict | None) -> None:
        """Score data that has depth maps or not (``has_depth``), whose depth ``depth_record`` describes: the held-out
        metrics are (re)made, one set per stage and variant (``val``, ``val_perturbed``, ...; metric states are not
        saved in checkpoints). Depth stays off for a module trained without it."""
        self.with_depth = self.with_depth and has_depth
        space = depth_space(depth_record) if self.with_depth else None
        stages = [held_out_stage(stage, variant) for stage in HELD_OUT for variant in EVAL_VARIANTS]
        self.held_out_metrics = nn.ModuleDict(
            {stage: MaskDepthMetrics(logged_name(stage, ""), space, self.with_depth) for stage in stages}
        )

    def forward(self, background: Tensor, composite: Tensor) -> tuple[Tensor, Tensor | None]:
        """``background``, ``composite`` ``(B, C, H, W)`` -> ``(mask_logits, depth)``, ``(B, 1, H, W)`` each,
        depth in [0, 1] like its target (``None`` without :attr:`with_depth`).

        Mended: the source document fed the raw, unbounded depth to SSIM, whose data range is [0, 1];
        :func:`bounded_depth` bounds it as the model says (``depth_output``).
        """
        mask_logits, depth = self.net(background, composite)
        return mask_logits, bounded_depth(depth, self.net.depth_output) if self.with_depth else None

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        mask_logits, depth = self(batch[BACKGROUND], batch[COMPOSITE])
        depth_target = batch[DEPTH] if self.with_depth else None
        losses = self.loss(mask_logits, depth, batch[MASK], depth_target)
        train = stage == "train"
        # Per-step values only for training; validation and test are read per epoch, reduced over devices
        # (training skips the reduction: it would cost a collective every step).
        self.log_dict(
            {logged_name(stage, name): value for name, value in losses.items()},
            on_step=train,
            on_epoch=True,
            sync_dist=not train,
            batch_size=mask_logits.shape[0],
            add_dataloader_idx=False,
        )
        if not train:
            metrics = self.held_out_metrics[stage]
            # In float32, as the loss: under bf16 autocast SSIM's convolutions would otherwise run in bfloat16.
            in_float32(metrics.update, mask_logits, depth, batch[MASK], depth_target)
            # Metric objects: Lightning computes them over the epoch (synced by torchmetrics), then resets them.
            for collection in metrics.collections():
                self.log_dict(collection, on_step=False, on_epoch=True, add_dataloader_idx=False)
        return losses["loss"]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._shared_step(batch, self._held_out_stage("val", dataloader_idx))

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._shared_step(batch, self._held_out_stage("test", dataloader_idx))

    def _held_out_stage(self, stage: str, dataloader_idx: int) -> str:
        """The stage a held-out loader's values are logged under: the datamodule's loaders are its
        ``eval_variants()``, in order (clean, then perturbed)."""
        variants = self.trainer.datamodule.eval_variants() if self.trainer.datamodule is not None else (CLEAN,)
        return held_out_stage(stage, variants[dataloader_idx])

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``mask``: foreground probability, ``depth``: in [0, 1] (brighter = nearer), ``(B, 1, H, W)`` each."""
        mask_logits, depth = self(batch[BACKGROUND], batch[COMPOSITE])
        return {MASK: torch.sigmoid(mask_logits), **({DEPTH: depth} if depth is not None else {})}

    def configure_optimizers(self) -> dict | None:
        if not any(p.requires_grad for p in self.parameters()):
            return None  # a model without weights to learn (the subtraction baseline)
        optimizer = self.make_optimizer(self.parameters())
        if self.make_scheduler is None:
            return {"optimizer": optimizer}
        scheduler = self.make_scheduler(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def build_module(cfg: DictConfig, datamodule=None) -> MaskDepthModule:
    """The module from a composed config's ``model``, ``loss``, ``optimizer`` and ``scheduler`` groups.

    An empty or missing ``scheduler`` (``conf/scheduler/none.yaml``) means a constant learning rate. With a
    ``data`` group (train.py's), its :class:`~fgbg.data.transforms.Preprocessing` goes along; with the
    ``datamodule`` it makes, set up, whether the data has depth and the depth's record.
    """
    config = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "loss", "optimizer")}
    config["scheduler"] = OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None
    config["with_depth"] = datamodule.has_depth if datamodule is not None else True
    config["depth_record"] = datamodule.depth_record if datamodule is not None else None
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
        with_depth=config["with_depth"],
        depth_record=config["depth_record"],
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
    the preprocessing entry (image_size, grayscale, normalize, stats) made into that entry, and those before
    mask-only data and depth records marked as trained with depth of unrecorded meaning."""
    config = moved_targets(config)
    config["model"] = upgraded_model(config["model"])
    config.setdefault("with_depth", True)
    config.setdefault("depth_record", None)
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
