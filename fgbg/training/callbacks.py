"""Callbacks that show a run (prediction grids of held-out samples, where a training step's time goes) and
that make it stop and resume cleanly (:class:`CleanExit`, :class:`RngState`).

The source document saved prediction images from inside its training loop (``saveimage``) and timed data
loading, model and other work by hand; here both are Lightning callbacks, configured in ``conf/callbacks/``.
The two others are always on: ``fgbg.tasks.train.train`` adds them.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.data import extract_batch_size
from lightning.pytorch.utilities.exceptions import SIGTERMException
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import make_grid

GRID_COLUMNS = ("composite", "mask", "pred mask", "depth", "pred depth")
# Tiles are enlarged (nearest neighbour, by a whole factor) to at least this side, so that small
# training images stay visible and the column titles fit.
MIN_TILE = 64
PADDING = 2
HEADER = 14


def prediction_grid(batch: dict[str, Tensor], prediction: dict[str, Tensor]) -> Image.Image:
    """One row per sample, columns ``GRID_COLUMNS``, titled on top.

    Args:
        batch: ``fg_bg_image`` ``(N, 3, S, S)``, ``ms_bg_image`` and ``dp_image`` ``(N, 1, S, S)``.
        prediction: ``mask`` (foreground probability, shown as grey, not thresholded) and ``depth``,
            ``(N, 1, S, S)`` in [0, 1] (what ``MaskDepthModule.predict_step`` returns).

    The composite is stretched to its own [min, max] (inputs may be normalised); masks and depths are
    shown as they are, black 0 to white 1, so true and predicted values compare directly.
    Returns an RGB image ``HEADER + N * (T + PADDING) + PADDING`` high and ``5 * (T + PADDING) + PADDING``
    wide, ``T`` the tile side (``S`` enlarged to at least ``MIN_TILE``).
    """
    composite = batch["fg_bg_image"].float()
    low = composite.amin(dim=(1, 2, 3), keepdim=True)
    high = composite.amax(dim=(1, 2, 3), keepdim=True)
    composite = (composite - low) / (high - low).clamp(min=1e-8)
    columns = [composite, batch["ms_bg_image"], prediction["mask"], batch["dp_image"], prediction["depth"]]
    tiles = torch.stack([c.float().cpu().expand(-1, 3, -1, -1) for c in columns], dim=1).flatten(0, 1)
    scale = math.ceil(MIN_TILE / tiles.shape[-1])
    if scale > 1:
        tiles = F.interpolate(tiles, scale_factor=scale, mode="nearest")
    grid = make_grid(tiles.clamp(0, 1), nrow=len(GRID_COLUMNS), padding=PADDING, pad_value=1.0)
    pixels = grid.mul(255).round().byte().permute(1, 2, 0).numpy()
    image = Image.new("RGB", (pixels.shape[1], pixels.shape[0] + HEADER), "white")
    image.paste(Image.fromarray(pixels), (0, HEADER))
    draw, step = ImageDraw.Draw(image), tiles.shape[-1] + PADDING
    for i, title in enumerate(GRID_COLUMNS):
        draw.text((PADDING + i * step + 2, 1), title, fill="black")
    return image


class PredictionGrid(L.Callback):
    """After each validation epoch, predict a fixed set of held-out samples and save / log their grid.

    The samples are ``n_samples`` evenly spaced over the validation dataset (in its fixed order, so the
    same in every epoch and every run with the same split; spread out, so they show different scenes).
    The grid (see :func:`prediction_grid`) is written to ``<dirpath>/epoch_XXX.png`` and, with a wandb
    logger, logged as the image ``val/predictions``.
    Only the global-rank-zero process does this; the sanity check before training is skipped.
    """

    def __init__(self, dirpath: str | Path, n_samples: int = 8):
        self.dirpath, self.n_samples = Path(dirpath), n_samples
        self._batch: dict[str, Tensor] | None = None

    def _samples(self, trainer: L.Trainer) -> dict[str, Tensor]:
        if self._batch is None:
            loader = trainer.val_dataloaders
            loader = loader[0] if isinstance(loader, (list, tuple)) else loader
            dataset = loader.dataset
            picks = torch.linspace(0, len(dataset) - 1, min(self.n_samples, len(dataset))).round().long()
            self._batch = loader.collate_fn([dataset[i] for i in picks.tolist()])
        return self._batch

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        precision = trainer.precision_plugin
        batch = precision.convert_input(move_data_to_device(self._samples(trainer), pl_module.device))
        # Lightning runs this hook without gradients, the module in eval mode; the precision is the steps'.
        with precision.forward_context():
            image = prediction_grid(batch, pl_module.predict_step(batch, 0))
        path = self.dirpath / f"epoch_{trainer.current_epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        caption = f"epoch {trainer.current_epoch}: " + " | ".join(GRID_COLUMNS)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/predictions", [image], step=trainer.global_step, caption=[caption])


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


class CleanExit(L.Callback):
    """SIGTERM or Ctrl-C while fitting: finish the current step, save ``checkpoints/last.ckpt`` there, stop.

    Lightning's own SIGTERM handling is the base: its handler sets ``trainer.received_sigterm`` and its loops
    then raise ``SIGTERMException`` between two steps, where the loop state is whole. While training, this
    callback puts its handler before Lightning's for SIGTERM and routes SIGINT (Ctrl-C) the same way; a second
    Ctrl-C stops at once (a ``KeyboardInterrupt``, no checkpoint). On the exception it saves the checkpoint
    that a resume continues from exactly; the caller reads ``signal`` (``None`` when none came) and
    ``checkpoint`` (the file saved, if any) and exits with ``128 + signal``.
    """

    def __init__(self):
        self.signal: signal.Signals | None = None
        self.checkpoint: Path | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has just installed its SIGTERM handler (and restores the previous ones when the run ends).
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set signal handlers
        lightning_handler = signal.getsignal(signal.SIGTERM)

        def handle(signum, frame):
            if self.signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # Ctrl-C again: stop now
            self.signal = signal.Signals(signum)
            lightning_handler(signum, frame)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handle)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal = self.signal or signal.SIGINT
            return  # it may have come mid-step: the weights and the loop state need not agree
        if not isinstance(exception, SIGTERMException):
            return
        self.signal = self.signal or signal.SIGTERM
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.checkpoint = _last_checkpoint_path(trainer)
            trainer.save_checkpoint(self.checkpoint, weights_only=False)  # the whole training state


def _last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where the run's ModelCheckpoint keeps ``last.ckpt`` (told that this file is now its last one)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        # Saved in the checkpoint's callback state: a resume into the same folder overwrites this file
        # instead of starting last-v1.ckpt beside it.
        callback.last_model_path = str(path)
        return path
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class RngState(L.Callback):
    """Keeps the global random states (torch, CUDA, numpy, Python) in checkpoints and restores them when
    training starts again from one, so randomness in the steps continues as if the run had not stopped.

    Restored in ``on_train_start``, after what a resumed run does before its first step (Lightning runs the
    sanity check with its random state isolated). Stored as tensors and plain containers, so checkpoints
    still load with ``torch.load(weights_only=True)``. Under DDP a checkpoint holds rank zero's states.
    """

    def __init__(self):
        self._loaded: dict | None = None

    def state_dict(self) -> dict:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._loaded = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loaded is None:
            return
        state, self._loaded = self._loaded, None
        torch.set_rng_state(state["torch"])
        if torch.cuda.is_available():
            for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, device)
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
